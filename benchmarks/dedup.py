"""Near-dedup throughput and quality: tuneforge's NearDedup against a datasketch reference.

Usage: ``python -m benchmarks.dedup --docs 10000 100000 [--reference-hash xxh32]``

For each corpus size the synthetic corpus (:mod:`benchmarks.synthetic_corpus`) is generated
once; then each method runs over the same texts, with the same shingles, permutation count,
threshold and LSH bands, and the same decision rule (drop a sample when its estimated Jaccard
with a kept sample sharing a band reaches the threshold; keep the first occurrence). The
reference hashes shingles with datasketch's default SHA-1, or with xxhash when asked. Timings
exclude generating the corpus. Each method runs in a forked copy of this process, so its peak
RSS (``getrusage``) is its own; the corpus is already in memory when it starts, and ``+RSS`` is
what the method added.

Ground truth: a planted copy is a duplicate when its exact shingle Jaccard with its original
reaches the threshold (exact copies always do). Heavily edited copies fall below it and must be
kept, so they count against precision when dropped.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from benchmarks.forked import in_child
from benchmarks.synthetic_corpus import Corpus, generate
from tuneforge.data.dedup import NearDedup
from tuneforge.data.minhash import shingles
from tuneforge.data.sample import Sample
from tuneforge.data.steps import StepStats


@dataclass(frozen=True)
class Settings:
    """What both methods share."""

    threshold: float = 0.8
    num_perm: int = 128
    shingle: Literal["word", "char"] = "word"
    shingle_size: int = 5
    reference_hash: Literal["sha1", "xxh32"] = "sha1"

    def step(self) -> NearDedup:
        return NearDedup(self.threshold, self.num_perm, self.shingle, self.shingle_size)


def planted_duplicates(corpus: Corpus, settings: Settings) -> set[str]:
    """Ids of planted copies whose exact shingle Jaccard with their original reaches threshold."""
    texts = {doc.id: doc.text for doc in corpus.documents}
    truth = set()
    for doc in corpus.documents:
        if doc.duplicate_kind == "exact":
            truth.add(doc.id)
        elif doc.duplicate_kind == "near":
            original = texts[doc.duplicate_of or ""]
            a = set(shingles(doc.text, settings.shingle_size, settings.shingle))
            b = set(shingles(original, settings.shingle_size, settings.shingle))
            if len(a & b) >= settings.threshold * len(a | b):
                truth.add(doc.id)
    return truth


def precision_recall(dropped: set[str], truth: set[str]) -> tuple[float, float]:
    """Precision and recall of the dropped ids against the true duplicates."""
    hits = len(dropped & truth)
    return hits / max(len(dropped), 1), hits / max(len(truth), 1)


def run_tuneforge(corpus: Corpus, settings: Settings) -> set[str]:
    """Drop near duplicates with :class:`NearDedup`; return the dropped ids."""
    # Samples are made as the step pulls them, so its memory is the step's own.
    samples = (
        Sample(id=d.id, kind="text", source="synthetic", text=d.text) for d in corpus.documents
    )
    step = settings.step()
    kept = {s.id for s in step(samples, StepStats(step.name))}
    return {d.id for d in corpus.documents} - kept


def run_datasketch(corpus: Corpus, settings: Settings) -> set[str]:
    """The reference: datasketch ``MinHash`` + ``MinHashLSH`` with the same bands and rule."""
    from datasketch import MinHash, MinHashLSH

    step = settings.step()
    lsh = MinHashLSH(settings.threshold, settings.num_perm, params=(step.bands, step.rows))
    # Reusing the permutations avoids datasketch drawing them again for every MinHash.
    permutations = MinHash(settings.num_perm).permutations
    hashfunc = None  # datasketch's default, SHA-1 truncated to 32 bits
    if settings.reference_hash == "xxh32":
        import xxhash

        hashfunc = xxhash.xxh32_intdigest
    kept: dict[str, MinHash] = {}
    dropped = set()
    for doc in corpus.documents:
        grams = shingles(doc.text, settings.shingle_size, settings.shingle)
        if not grams:
            continue
        sketch = MinHash(
            settings.num_perm, hashfunc=hashfunc, permutations=permutations, scheme="affine32"
        )
        sketch.update_batch([g.encode() for g in grams])
        if any(kept[key].jaccard(sketch) >= settings.threshold for key in lsh.query(sketch)):
            dropped.add(doc.id)
            continue
        lsh.insert(doc.id, sketch)
        kept[doc.id] = sketch
    return dropped


def _timed(method: Callable[..., set[str]], *args: Any) -> tuple[set[str], float]:
    start = time.perf_counter()
    dropped = method(*args)
    return dropped, time.perf_counter() - start


def measure(method: Callable[..., set[str]], *args: Any) -> tuple[set[str], float, float, float]:
    """Run ``method`` in a forked child: dropped ids, seconds, peak RSS MB, RSS added MB."""
    (dropped, seconds), peak, added = in_child(_timed, method, *args)
    return dropped, seconds, peak, added


def bench(n_docs: int, settings: Settings, seed: int) -> list[dict[str, Any]]:
    """One row per method for a corpus of ``n_docs`` documents."""
    corpus = generate(n_docs, seed)
    megabytes = sum(len(d.text.encode()) for d in corpus.documents) / 1e6
    truth = planted_duplicates(corpus, settings)
    rows = []
    for name, method in (("tuneforge", run_tuneforge), ("datasketch", run_datasketch)):
        dropped, seconds, peak, added = measure(method, corpus, settings)
        precision, recall = precision_recall(dropped, truth)
        rows.append(
            {
                "docs": n_docs,
                "method": name,
                "docs/s": n_docs / seconds,
                "MB/s": megabytes / seconds,
                "precision": precision,
                "recall": recall,
                "dropped": len(dropped),
                "true dups": len(truth),
                "peak RSS MB": peak,
                "+RSS MB": added,
            }
        )
    rows[0]["ours/ds"] = rows[0]["docs/s"] / rows[1]["docs/s"]
    return rows


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    """Print rows as a Markdown table."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        cells = [row.get(c, "") for c in columns]
        print(
            "| " + " | ".join(f"{c:,.3f}" if isinstance(c, float) else str(c) for c in cells) + " |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[20000], help="corpus sizes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--shingle", choices=("word", "char"), default="word")
    parser.add_argument("--shingle-size", type=int, default=5)
    parser.add_argument(
        "--reference-hash",
        choices=("sha1", "xxh32"),
        default="sha1",
        help="hash of the datasketch reference: its default SHA-1, or xxhash (needs xxhash)",
    )
    args = parser.parse_args()
    settings = Settings(
        args.threshold, args.num_perm, args.shingle, args.shingle_size, args.reference_hash
    )
    step = settings.step()
    print(f"{settings}, LSH bands x rows = {step.bands} x {step.rows}")
    rows = []
    for n in args.docs:
        rows += bench(n, settings, args.seed)
    print_table(rows)


if __name__ == "__main__":
    main()
