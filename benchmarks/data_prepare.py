"""Whole data-pipeline throughput and memory: every step, the chain, rendering and tokenization.

Usage: ``python -m benchmarks.data_prepare --docs 10000 100000``

Samples: each synthetic document (:mod:`benchmarks.synthetic_corpus`, 0.5-4 KB, with planted
duplicates and PII) becomes one chat sample, user ``"Summarise this document.\\n\\n" + text``
and assistant the document's first sentence. The reply is short and derived from the document,
as in a summarisation set, so the user turn carries nearly all the bytes and exact and near
copies of a document stay copies as conversations. MB counts the UTF-8 bytes of both turns.

Per corpus size:

* The corpus is generated once, streamed to a JSONL file (one chat record a line).
* **chain**: ``run_steps`` over ``build_steps(DataConfig(path="unused"))`` (kind, normalize,
  quality, exact_dedup, near_dedup, pii, all defaults), fed a stream read from that file in a
  forked child. docs/s excludes the time spent reading and parsing the file (measured around
  each pull of the source), so it is the steps' own. Peak RSS is the child's ``ru_maxrss``;
  ``run_steps`` returns the kept samples as a list, so that row holds them all by design.
* **stream**: the same steps drained one sample at a time (nothing kept), in another child:
  the memory the steps themselves need as the corpus grows (dedup indexes only).
* **data stage**: ``prepare_data`` itself on the JSONL file (reading, steps, split,
  decontamination, rendering through ``render_chat_batch``, writing samples, token rows and
  packed rows, report), in a fourth child: the stage streams through a spill file, so its peak
  RSS grows only with the dedup and decontamination indexes.
* **steps in isolation**: in a third child the whole corpus is loaded as a list, and each step
  (fresh, from ``build_steps``) runs alone over that same list, the raw corpus.
* **render**: the samples the chain kept (the first ``--render-max``, default 20,000; the
  ratio is per sample) are rendered with ``render_chat_batch`` in one call (ids and labels, as
  ``tuneforge data prepare`` does), and separately their chat-template texts are encoded with
  ``tokenizer.backend_tokenizer.encode_batch``: the raw ``tokenizers`` baseline the target
  names. Rendering runs first, so it also pays for warming the tokenizer's word cache.
  ``template only`` (``apply_chat_template`` to text) and ``encode, one at a time``
  (``backend_tokenizer.encode`` per text, no batch parallelism) break the gap down. The
  tokenizer is the project's own (``tuneforge.models.tiny.train_tokenizer``, ChatML, 2,048 BPE
  tokens), trained once in a child and loaded from disk, so that ``tokenizers`` keeps its
  thread pool (it switches parallelism off in a process forked after using it).

``--profile-docs N`` (default 2000, 0 to skip) profiles the chain and ``render_chat_batch`` on
the first N documents with cProfile and prints the functions with the most own time.

``--only-render`` skips the steps and the chain and renders the generated corpus itself
(before cleaning and dedup): a quick check of the tokenization target alone.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import json
import pstats
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks.dedup import print_table
from benchmarks.forked import in_child, peak_mb
from benchmarks.synthetic_corpus import Document, iter_documents
from tuneforge.config.schema import DataConfig
from tuneforge.data.configure import build_steps
from tuneforge.data.sample import Sample
from tuneforge.data.steps import StepStats, run_steps

PIPELINE_TARGET = 2000.0  # docs/s on 2 cores, whole chain
TOKENIZE_TARGET = 1.5  # render_chat_batch time / raw encode_batch time
MEMORY_TARGET = 1.5  # peak RSS growth allowed from the smallest to the largest size
PROMPT = "Summarise this document."


def first_sentence(text: str) -> str:
    """The text up to and including its first full stop (or its first line)."""
    head = text.split("\n", 1)[0]
    end = head.find(". ")
    return head if end < 0 else head[: end + 1]


def chat_record(doc: Document) -> dict[str, Any]:
    """The chat record of one document: a summarisation request and its first sentence."""
    return {
        "id": doc.id,
        "messages": [
            {"role": "user", "content": f"{PROMPT}\n\n{doc.text}"},
            {"role": "assistant", "content": first_sentence(doc.text)},
        ],
    }


def to_sample(record: dict[str, Any]) -> Sample:
    return Sample(id=record["id"], kind="chat", source="synthetic", messages=record["messages"])


def write_corpus(path: Path, n_docs: int, seed: int) -> tuple[float, float]:
    """Stream ``n_docs`` chat records to ``path``; return (MB of message text, seconds)."""
    size, start = 0, time.perf_counter()
    with open(path, "w", encoding="utf-8") as handle:
        for doc in iter_documents(n_docs, seed):
            record = chat_record(doc)
            size += sum(len(m["content"].encode()) for m in record["messages"])
            handle.write(json.dumps(record) + "\n")
    return size / 1e6, time.perf_counter() - start


class TimedSource:
    """Samples read from a JSONL file, timing every pull so the caller can subtract it."""

    def __init__(self, path: Path, limit: int | None = None) -> None:
        self.path, self.limit, self.seconds = path, limit, 0.0

    def __iter__(self) -> Iterator[Sample]:
        with open(self.path, encoding="utf-8") as handle:
            for index, line in enumerate(handle):
                if self.limit is not None and index >= self.limit:
                    return
                start = time.perf_counter()
                sample = to_sample(json.loads(line))
                self.seconds += time.perf_counter() - start
                yield sample


def load_samples(path: Path, limit: int | None = None) -> list[Sample]:
    return list(TimedSource(path, limit))


def chain(path: Path, kept_path: Path) -> dict[str, Any]:
    """``run_steps`` end to end over a stream; writes the kept records for rendering."""
    source = TimedSource(path)
    start = time.perf_counter()
    kept, stats = run_steps(source, build_steps(DataConfig(path="unused")))
    seconds = time.perf_counter() - start - source.seconds
    peak = peak_mb()
    with open(kept_path, "w", encoding="utf-8") as handle:
        for sample in kept:
            handle.write(json.dumps({"id": sample.id, "messages": sample.messages}) + "\n")
    books = {s.name: (s.kept, sum(s.dropped.values()), s.changed) for s in stats}
    return {"seconds": seconds, "read_s": source.seconds, "kept": len(kept), "peak": peak} | {
        "books": books
    }


def stream(path: Path) -> dict[str, Any]:
    """The same steps, drained one sample at a time: what the steps alone hold."""
    source = TimedSource(path)
    flow: Iterable[Sample] = source
    for step in build_steps(DataConfig(path="unused")):
        flow = step(flow, StepStats(step.name))
    start = time.perf_counter()
    collections.deque(flow, maxlen=0)
    return {"seconds": time.perf_counter() - start - source.seconds, "read_s": source.seconds}


def stage(path: Path, tokenizer_dir: Path, out_dir: Path) -> dict[str, Any]:
    """The whole data stage (``prepare_data``): read, steps, split, decontaminate, render, write."""
    from transformers import AutoTokenizer

    from tuneforge.data.prepare import prepare_data

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    books = prepare_data(DataConfig(path=str(path), max_length=2048), tokenizer, 0, out_dir)
    return {"seconds": time.perf_counter() - start, "kept": books["kept"]}


def isolated_steps(path: Path) -> dict[str, tuple[float, int]]:
    """Each step alone over the same in-memory list (the raw corpus): seconds, kept."""
    samples = load_samples(path)
    times = {}
    for step in build_steps(DataConfig(path="unused")):
        stats = StepStats(step.name)
        start = time.perf_counter()
        collections.deque(step(samples, stats), maxlen=0)
        times[step.name] = (time.perf_counter() - start, stats.kept)
    return times


def train_benchmark_tokenizer(out_dir: Path) -> None:
    """The project's tiny-model tokenizer (same corpus and vocabulary), saved to ``out_dir``."""
    from tuneforge.config.schema import TinyModelConfig
    from tuneforge.models.corpus import assistant_dialogues, general_corpus
    from tuneforge.models.tiny import train_tokenizer

    spec = TinyModelConfig()
    paragraphs = general_corpus(seed=0, n_paragraphs=spec.corpus_paragraphs)
    dialogues = assistant_dialogues(seed=0, n=spec.corpus_dialogues)
    train_tokenizer(paragraphs, dialogues, spec.vocab_size).save_pretrained(out_dir)


def render(kept_path: Path, tokenizer_dir: Path, limit: int) -> dict[str, Any]:
    """render_chat_batch over the first ``limit`` kept samples, then raw ``tokenizers`` encoding."""
    from transformers import PreTrainedTokenizerFast

    from tuneforge.data.render import render_chat_batch

    tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
    conversations = [s.messages for s in load_samples(kept_path, limit)]
    start = time.perf_counter()
    rendered = render_chat_batch(tokenizer, [(messages, None) for messages in conversations])
    render_s = time.perf_counter() - start
    start = time.perf_counter()
    texts = [tokenizer.apply_chat_template(m, tokenize=False) for m in conversations]
    template_s = time.perf_counter() - start
    start = time.perf_counter()
    encodings = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    serial = [tokenizer.backend_tokenizer.encode(t, add_special_tokens=False) for t in texts]
    serial_s = time.perf_counter() - start
    return {
        "samples": len(texts),
        "MB": sum(len(t.encode()) for t in texts) / 1e6,
        "render_chat_batch": (render_s, sum(len(r.input_ids) for r in rendered)),
        "template only": (template_s, 0),
        "encode_batch": (encode_s, sum(len(e.ids) for e in encodings)),
        "encode, one at a time": (serial_s, sum(len(e.ids) for e in serial)),
    }


def bench_size(
    n_docs: int, seed: int, work: Path, tokenizer_dir: Path, render_max: int, only_render: bool
) -> dict[str, Any]:
    """Every measurement at one corpus size (rendering alone if ``only_render``); table rows."""
    corpus, kept = work / f"corpus-{n_docs}.jsonl", work / f"kept-{n_docs}.jsonl"
    mb, gen_s = write_corpus(corpus, n_docs, seed)
    print(f"[{n_docs:,} docs] generated {mb:.1f} MB in {gen_s:.1f}s", flush=True)
    if only_render:
        return bench_render(n_docs, corpus, tokenizer_dir, render_max)
    chained, chain_peak, chain_added = in_child(chain, corpus, kept)
    print(f"[{n_docs:,} docs] chain {chained['seconds']:.1f}s", flush=True)
    drained, stream_peak, stream_added = in_child(stream, corpus)
    staged, stage_peak, stage_added = in_child(stage, corpus, tokenizer_dir, work / "stage")
    print(f"[{n_docs:,} docs] data stage {staged['seconds']:.1f}s", flush=True)
    steps, _, _ = in_child(isolated_steps, corpus)
    print(f"[{n_docs:,} docs] steps {sum(t for t, _ in steps.values()):.1f}s", flush=True)
    rows = []
    for name, (seconds, kept_n) in steps.items():
        rows.append(_row(name, n_docs, mb, seconds, kept=kept_n))
    rows.append(_row("chain (run_steps)", n_docs, mb, chained["seconds"], kept=chained["kept"]))
    rows[-1] |= {"peak RSS MB": chain_peak, "+RSS MB": chain_added}
    rows.append(_row("stream (drained)", n_docs, mb, drained["seconds"], kept=chained["kept"]))
    rows[-1] |= {"peak RSS MB": stream_peak, "+RSS MB": stream_added}
    rows.append(
        _row("data stage (prepare_data)", n_docs, mb, staged["seconds"], kept=staged["kept"])
    )
    rows[-1] |= {"peak RSS MB": stage_peak, "+RSS MB": stage_added}
    return bench_render(n_docs, kept, tokenizer_dir, render_max) | {
        "rows": rows,
        "chain_rate": n_docs / chained["seconds"],
        "chain_peak": chain_peak,
        "stream_peak": stream_peak,
        "stage_peak": stage_peak,
        "books": chained["books"],
        "read_s": chained["read_s"],
    }


def bench_render(n_docs: int, path: Path, tokenizer_dir: Path, limit: int) -> dict[str, Any]:
    """The rendering rows over the first ``limit`` records of ``path``, and the ratio."""
    rendered, _, _ = in_child(render, path, tokenizer_dir, limit)
    render_rows = []
    for name in ("render_chat_batch", "template only", "encode_batch", "encode, one at a time"):
        seconds, tokens = rendered[name]
        render_rows.append(_row(name, rendered["samples"], rendered["MB"], seconds))
        render_rows[-1]["tokens/s"] = tokens / seconds if tokens else ""
    ratio = rendered["render_chat_batch"][0] / rendered["encode_batch"][0]
    render_rows[0]["x encode_batch"] = ratio
    return {"docs": n_docs, "rows": [], "render_rows": render_rows, "ratio": ratio}


def _row(name: str, n: int, mb: float, seconds: float, **extra: Any) -> dict[str, Any]:
    row = {"what": name, "docs": n, "seconds": seconds, "docs/s": n / seconds, "MB/s": mb / seconds}
    return row | extra


def profile(path: Path, kept_path: Path, tokenizer_dir: Path, n_docs: int) -> str:
    """cProfile of the chain over ``n_docs`` and of render_chat_batch over 500 kept samples."""
    from transformers import PreTrainedTokenizerFast

    from tuneforge.data.render import render_chat_batch

    samples = load_samples(path, n_docs)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
    conversations = [(s.messages, None) for s in load_samples(kept_path, 500)]
    run_steps(samples[:10], build_steps(_config()))  # one-off tables, outside the profile
    out = io.StringIO()
    for title, work in (
        (f"chain, {len(samples)} docs", lambda: run_steps(samples, build_steps(_config()))),
        (
            f"render_chat_batch, {len(conversations)} samples",
            lambda: render_chat_batch(tokenizer, conversations),
        ),
    ):
        profiler = cProfile.Profile()
        profiler.runcall(work)
        out.write(f"\n### cProfile: {title} (top 12 by own time)\n")
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
    return out.getvalue()


def _config() -> DataConfig:
    return DataConfig(path="unused")


def verdicts(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per target with the measured figure and PASS/FAIL."""
    rows = []
    for r in results:
        rate = r["chain_rate"]
        rows.append(
            _verdict(
                f"whole pipeline, {r['docs']:,} docs",
                f">= {PIPELINE_TARGET:,.0f} docs/s",
                f"{rate:,.0f} docs/s",
                rate >= PIPELINE_TARGET,
                f"{PIPELINE_TARGET / rate:.2f}x short" if rate < PIPELINE_TARGET else "",
            )
        )
        rows.append(tokenize_verdict(r))
    if len(results) > 1:
        small, large = results[0], results[-1]
        growth = f"{small['docs']:,} -> {large['docs']:,} docs"
        for key, name in (
            ("chain_peak", "run_steps"),
            ("stream_peak", "stream (drained)"),
            ("stage_peak", "data stage (prepare_data)"),
        ):
            a, b = small[key], large[key]
            rows.append(
                _verdict(
                    f"flat memory, {name}",
                    f"peak RSS x{MEMORY_TARGET} max over {growth}",
                    f"{a:,.0f} -> {b:,.0f} MB (x{b / a:.2f})",
                    b <= MEMORY_TARGET * a,
                    "",
                )
            )
    return rows


def tokenize_verdict(result: dict[str, Any]) -> dict[str, Any]:
    """The tokenization target's row: rendering time over raw ``encode_batch`` time."""
    ratio = result["ratio"]
    return _verdict(
        f"tokenization, {result['docs']:,} docs",
        f"<= {TOKENIZE_TARGET}x encode_batch",
        f"{ratio:.2f}x",
        ratio <= TOKENIZE_TARGET,
        f"{ratio / TOKENIZE_TARGET:.1f}x over" if ratio > TOKENIZE_TARGET else "",
    )


def _verdict(target: str, wanted: str, got: str, ok: bool, gap: str) -> dict[str, Any]:
    return {
        "target": target,
        "wanted": wanted,
        "measured": got,
        "result": "PASS" if ok else "FAIL",
        "gap": gap,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[10000], help="corpus sizes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--render-max", type=int, default=20000, help="kept samples rendered (ratio is per sample)"
    )
    parser.add_argument("--profile-docs", type=int, default=2000, help="0: no profile")
    parser.add_argument(
        "--only-render", action="store_true", help="the tokenization target alone, on raw docs"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tuneforge-bench-") as tmp:
        work = Path(tmp)
        in_child(train_benchmark_tokenizer, work / "tokenizer")
        results = [
            bench_size(n, args.seed, work, work / "tokenizer", args.render_max, args.only_render)
            for n in args.docs
        ]
        if args.only_render:
            print("\n## Rendering and tokenization of the generated samples\n")
            print_table([row for r in results for row in r["render_rows"]])
            print("\n## Targets\n")
            print_table([tokenize_verdict(r) for r in results])
            return
        print("\n## Steps (docs/s and MB/s of the step's own time)\n")
        print_table([row for r in results for row in r["rows"]])
        print("\n## Rendering and tokenization of the kept samples\n")
        print_table([row for r in results for row in r["render_rows"]])
        for r in results:
            print(f"\nbooks at {r['docs']:,} docs (kept, dropped, changed): {r['books']}")
            print(f"reading the JSONL source took {r['read_s']:.1f}s (excluded)")
        print("\n## Targets\n")
        print_table(verdicts(results))
        if args.profile_docs:
            n = args.docs[0]
            text, _, _ = in_child(
                profile,
                work / f"corpus-{n}.jsonl",
                work / f"kept-{n}.jsonl",
                work / "tokenizer",
                args.profile_docs,
            )
            print(text)


if __name__ == "__main__":
    main()
