"""The data stage: read, clean, dedup, scrub, split, decontaminate, render, write, report.

Every record read is accounted for: ``read + expanded = kept + dropped +
quarantined``, with the reasons, per step, in the stage summary, the manifest
and the report (``expanded`` counts the samples a ranked record gives beyond
its first; it is 0 for every other format). Quarantined records are listed in
``quarantine.jsonl``, dropped samples (with the step and reason) in
``dropped.jsonl``; the Spark engine counts dropped samples without listing them.

What is rendered follows the objective (:data:`~tuneforge.data.configure.OBJECTIVE_OUTPUTS`):
sft and pretrain write token rows; reward, dpo, orpo and simpo also write
preference pairs, kto unpaired rows, grpo and rloo prompts
(:mod:`tuneforge.data.shards`). Preference and unpaired rows are trained on the
final assistant reply only, whatever ``data.train_on`` says, since the
objectives compare replies.

With ``data.sources`` the records of several datasets are read one after the other
and, after the steps, sampled into one mix (:mod:`tuneforge.data.mixture`); the
samples the mix leaves out are dropped as ``mix_cap:<source>`` or
``mix_sampled_out:<source>``, the copies it repeats are counted as ``repeated``
(``read + expanded + repeated = kept + dropped + quarantined``), and the books
and the report show the final mix per source (``mix``).

The stage streams: records flow from the reader through the steps into a spill
file on disk, holding only a 32-byte group hash per sample for the split; the
held-out splits are then read back, indexed for decontamination and written,
and the training split last, rendered and written a batch at a time
(:mod:`tuneforge.data.shards`). Memory grows with the dedup and decontamination
indexes, never with the samples. The Spark engine collects the survivors on the
driver instead and hands them to the same tail.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any, TextIO

import pyarrow.parquet as pq
from transformers import PreTrainedTokenizerBase

from tuneforge.config.schema import DataConfig
from tuneforge.console import progress
from tuneforge.data.bias_audit import BiasAudit
from tuneforge.data.configure import (
    OBJECTIVE_OUTPUTS,
    build_decontaminate,
    build_steps,
    cluster_report,
)
from tuneforge.data.mixture import SOURCE_KEY, Mixer, mix_books, open_sources
from tuneforge.data.readers import DatasetStream, SourcesStream
from tuneforge.data.render import Rendered, render_chat_batch, render_prompt_batch, render_text
from tuneforge.data.report import ConversationStats, write_report
from tuneforge.data.sample import Message, Sample
from tuneforge.data.shards import Prepared, PromptRow, SplitWriter, output_hashes
from tuneforge.data.split import SPLITS, assign_splits, group_rank
from tuneforge.data.steps import OnDrop, StepStats, chain_steps, check_balanced
from tuneforge.data.writers import dropped_record
from tuneforge.errors import DataError

RENDER_BATCH = 512  # samples rendered (and written) together
NO_TRAINED_TOKENS = "no_trained_tokens_within_max_length"
DROPPED_FILE = "dropped.jsonl"


def prepare_data(
    data: DataConfig,
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
    out_dir: Path,
    objective: str = "sft",
) -> dict[str, Any]:
    """Write ``samples/``, ``tokens/``, ``packed/`` per split, ``quarantine.jsonl``,
    ``dropped.jsonl`` and reports.

    The preference and RL objectives also get ``pairs/``, ``unpaired/`` or
    ``prompts/`` per split (:data:`~tuneforge.data.configure.OBJECTIVE_OUTPUTS`).
    ``dropped.jsonl`` lists every sample a step dropped, with the step and the
    reason (local engine only: the Spark engine counts them without listing them).

    Returns:
        The books: read, expanded, kept, dropped by reason, quarantined, per-step
        counts, per-split counts, tokens, packing, the objective's rows per split
        (``pairs``, ``unpaired`` by label, or ``prompts``), the sha256 of every
        output file, and for a mixture ``mix`` (per source) and ``repeated``.

    Raises:
        DataError: no usable sample remains, or the training split would be empty.
    """
    work = out_dir / ".work"
    work.mkdir(parents=True, exist_ok=True)
    steps = build_steps(data, tokenizer, objective)
    with (
        open(out_dir / "quarantine.jsonl", "w", encoding="utf-8") as quarantine,
        _drop_log(out_dir / DROPPED_FILE, data.engine) as on_drop,
    ):
        source = _source(data, quarantine)
        survivors, stats = _clean(source, steps, data, on_drop)
        mixer = None
        if data.sources is not None:  # after the steps: the shares apply to usable samples
            mixer = Mixer(data, seed, work / "usable.jsonl")
            stats.append(StepStats(mixer.name, on_drop=on_drop))
            survivors = mixer(survivors, stats[-1])
        pins = {s.name: s.split for s in data.sources or () if s.split}
        ranks, pinned = _spill(survivors, work / "kept.jsonl", seed, pins)
        check_balanced(stats)
        if not ranks:
            raise DataError(f"{data.describe()}: no usable samples ({_why(source, stats)})")
        assigned = assign_splits(ranks, data.val_fraction, data.test_fraction, pinned)
        del ranks, pinned
        copies, repeated = mixer.train_copies(assigned) if mixer else ({}, Counter())
        output = OBJECTIVE_OUTPUTS.get(objective)
        audit = BiasAudit()
        writers, render_stats, by_source = _write_splits(
            data, tokenizer, work / "kept.jsonl", assigned, stats, output, on_drop, copies, audit
        )
    shutil.rmtree(work)
    packing = {name: figures for name, w in writers.items() if (figures := w.close())}
    if not writers["train"].samples:
        raise DataError(f"{data.describe()}: no training samples left ({_why(source, stats)})")
    stats.append(render_stats)
    check_balanced(stats)
    mixed = None
    if mixer is not None and mixer.plan is not None and isinstance(source, SourcesStream):
        mixed = mix_books(data, source, mixer.plan, by_source, repeated)
    books = _books(source, stats, writers, packing, mixed)
    report = _report(books, source, steps, writers, on_drop is not None)
    report["bias"] = audit.result()
    books["bias_flags"] = report["bias"]["flags"]
    write_report(out_dir, report)
    books["outputs"] = output_hashes(out_dir)
    books["pii"] = report["pii"]  # findings by type, for the model card
    return books


def _source(data: DataConfig, quarantine: TextIO) -> DatasetStream | SourcesStream:
    """The records of ``data.path`` or of every source of ``data.sources``; the ones that
    cannot be used go to ``quarantine``."""
    if data.sources is not None:
        return open_sources(data, lambda q: quarantine.write(json.dumps(q.to_json()) + "\n"))
    return DatasetStream(
        data.path,
        data.format,
        data.system_prompt,
        data.max_samples,
        mapping=data.mapping or None,
        strict=data.strict,
        on_quarantine=lambda q: quarantine.write(json.dumps(q.to_json()) + "\n"),
        chunking=data.chunking.as_tuple(),
    )


@contextmanager
def _drop_log(path: Path, engine: str) -> Iterator[OnDrop | None]:
    """A callback writing each dropped sample to ``path`` as a JSON line, open for the block.

    None for the Spark engine, whose workers count dropped samples without listing them;
    ``path`` is then removed so that no earlier list is mistaken for this run's.
    """
    if engine == "spark":
        path.unlink(missing_ok=True)
        yield None
        return
    with open(path, "w", encoding="utf-8") as handle:

        def on_drop(step: str, sample: Sample, reason: str) -> None:
            handle.write(json.dumps(dropped_record(step, sample, reason)) + "\n")

        yield on_drop


def _clean(
    source: Iterable[Sample], steps: list, data: DataConfig, on_drop: OnDrop | None = None
) -> tuple[Iterable[Sample], list[StepStats]]:
    """The samples that pass the steps, streamed (local) or collected (Spark)."""
    if data.engine == "spark":
        from tuneforge.data.spark import run_steps_spark

        return run_steps_spark(list(source), steps, data.spark_master, data.spark_partitions)
    return chain_steps(source, steps, on_drop)


def _spill(
    samples: Iterable[Sample], path: Path, seed: int, pins: dict[str, str]
) -> tuple[list[bytes], list[str | None]]:
    """Write the survivors to disk, one JSON line each; return each one's split-group rank
    and the split its source pins it to (``pins``: source name -> split)."""
    ranks, pinned = [], []
    with open(path, "w", encoding="utf-8") as handle:
        for sample in samples:
            handle.write(json.dumps(dataclasses.asdict(sample), default=str) + "\n")
            ranks.append(group_rank(sample, seed))
            pinned.append(pins.get(sample.meta.get(SOURCE_KEY, "")))
    return ranks, pinned


def _read_back(
    path: Path, assigned: list[str], wanted: tuple[str, ...], copies: dict[int, int] | None = None
) -> Iterator[Sample]:
    """The spilled samples whose split is in ``wanted``, in file order; ``copies`` says how
    often a repeated one comes (a mixture's, by line index; once where not given)."""
    copies = copies or {}
    with open(path, encoding="utf-8") as handle:
        for index, (line, split) in enumerate(zip(handle, assigned, strict=True)):
            if split in wanted:
                sample = Sample(**json.loads(line))
                for _ in range(copies.get(index, 1)):
                    yield sample


def _write_splits(
    data: DataConfig,
    tokenizer: PreTrainedTokenizerBase,
    spill: Path,
    assigned: list[str],
    stats: list[StepStats],
    output: str | None = None,
    on_drop: OnDrop | None = None,
    copies: dict[int, int] | None = None,
    audit: BiasAudit | None = None,
) -> tuple[dict[str, SplitWriter], StepStats, dict[str, Counter[str]]]:
    """Held-out splits first (they feed decontamination), then the training split, with
    the ``copies`` of a mixture's repeated samples (see :func:`_read_back`); ``audit``
    sees every training sample written.

    Returns:
        The split writers, the render step's books, and the samples written per split
        by source name (a mixture's ``meta["source_name"]``; empty otherwise).
    """
    pack_length = (data.pack_length or data.max_length) if data.packing else None
    out_dir = spill.parent.parent
    writers = {name: SplitWriter(out_dir, name, pack_length, output) for name in SPLITS}
    by_source: dict[str, Counter[str]] = {name: Counter() for name in SPLITS}
    render_stats = StepStats("render", on_drop=on_drop)
    decontaminate = build_decontaminate(data, _read_back(spill, assigned, ("val", "test")))
    train: Iterable[Sample] = _read_back(spill, assigned, ("train",), copies)
    if decontaminate is not None:
        record = StepStats(decontaminate.name, on_drop=on_drop)
        stats.append(record)
        train = decontaminate(train, record)
    with progress() as bar:
        extra = sum(n - 1 for n in (copies or {}).values())
        task = bar.add_task("render", total=len(assigned) + extra, info="")
        for name, stream in (
            ("val", _read_back(spill, assigned, ("val",))),
            ("test", _read_back(spill, assigned, ("test",))),
            ("train", train),
        ):
            for batch in _batches(stream, RENDER_BATCH):
                kept, prepared = _render(batch, tokenizer, data, render_stats, output)
                writers[name].write(kept, prepared)
                if audit is not None and name == "train":
                    for sample in kept:
                        audit.add(sample)
                by_source[name].update(s.meta[SOURCE_KEY] for s in kept if SOURCE_KEY in s.meta)
                bar.advance(task, len(batch))
    return writers, render_stats, by_source


def _batches(samples: Iterable[Sample], size: int) -> Iterator[list[Sample]]:
    iterator = iter(samples)
    while batch := list(islice(iterator, size)):
        yield batch


def _render(
    batch: list[Sample],
    tokenizer: PreTrainedTokenizerBase,
    data: DataConfig,
    stats: StepStats,
    output: str | None = None,
) -> tuple[list[Sample], list[Prepared]]:
    """Render a batch for the objective's ``output``; drop samples with nothing to train on.

    Chat samples go through the chat template in one batched call (one row each,
    ``data.train_on``); preference and unpaired replies in another, trained on the
    final reply only; RL prompts in a third. Text samples (continued pre-training)
    become ``max_length`` rows trained on every token. A sample is dropped when a
    row it needs has no trained token within ``max_length`` (for a pair: either
    side), or, for RL, when its prompt is empty or does not leave room for a reply.
    """
    renders = _render_batch(batch, tokenizer, data, output)
    kept, prepared = [], []
    for sample in batch:
        stats.seen += 1
        item = _prepare(sample, renders, output, data.max_length)
        if isinstance(item, str):
            stats.drop(sample, item)
            continue
        stats.kept += 1
        kept.append(sample)
        prepared.append(item)
    return kept, prepared


@dataclasses.dataclass
class _Renders:
    """A batch's rendered rows by kind, each consumed in batch order."""

    texts: Iterator[list[Rendered]]
    chats: Iterator[Rendered]
    replies: Iterator[Rendered]
    prompts: Iterator[PromptRow]


def _render_batch(
    batch: list[Sample], tokenizer: PreTrainedTokenizerBase, data: DataConfig, output: str | None
) -> _Renders:
    """Everything a batch needs rendered, with one tokenizer call per kind of row."""
    cut = {"max_length": data.max_length, "template": data.template}
    texts = [
        render_text(tokenizer, s.text or "", data.max_length) for s in batch if s.kind == "text"
    ]
    chats = [(s.messages, s.tools) for s in batch if s.kind == "chat"]
    replies = [conversation for s in batch for conversation in _replies(s, output)]
    asking = [s for s in batch if s.kind != "text"] if output == "prompts" else []
    return _Renders(
        texts=iter(texts),
        chats=iter(render_chat_batch(tokenizer, chats, train_on=data.train_on, **cut)),
        replies=iter(render_chat_batch(tokenizer, replies, train_on="last_assistant", **cut)),
        prompts=iter(_prompt_rows(asking, tokenizer, data.template)),
    )


def _prompt_rows(
    samples: list[Sample], tokenizer: PreTrainedTokenizerBase, template: str | None
) -> list[PromptRow]:
    """Each sample's RL prompt, rendered in one batch, with the reply the data gives."""
    asks = [_rl_prompt(s) for s in samples]
    conversations = [(messages, s.tools) for s, (messages, _) in zip(samples, asks, strict=True)]
    ids = render_prompt_batch(tokenizer, conversations, template)
    return [
        PromptRow(prompt_ids, messages, sample.tools, reference)
        for sample, (messages, reference), prompt_ids in zip(samples, asks, ids, strict=True)
    ]


def _replies(sample: Sample, output: str | None) -> list[tuple[list[Message], Any]]:
    """The conversations whose final reply is trained: unpaired, or each side of a pair."""
    if sample.kind == "unpaired":
        return [(sample.messages, sample.tools)]
    if sample.kind != "preference":
        return []
    sides = [sample.chosen] if output == "prompts" else [sample.chosen, sample.rejected]
    return [(sample.messages + side, sample.tools) for side in sides]


def _rl_prompt(sample: Sample) -> tuple[list[Message], str]:
    """The prompt for online RL and the reply the data gives for it ("" if none)."""
    if sample.kind == "preference":
        return sample.messages, _final_reply(sample.chosen)
    last = max((i for i, m in enumerate(sample.messages) if m["role"] == "assistant"), default=None)
    if last is None:
        return sample.messages, ""
    return sample.messages[:last], sample.messages[last].get("content") or ""


def _final_reply(messages: list[Message]) -> str:
    replies = [m.get("content") or "" for m in messages if m["role"] == "assistant"]
    return replies[-1] if replies else ""


def _prepare(
    sample: Sample, renders: _Renders, output: str | None, max_length: int
) -> Prepared | str:
    """What a sample contributes to each output, or the reason it is dropped."""
    if sample.kind == "text":
        rows = [row for row in next(renders.texts) if row.trained_tokens]
        return Prepared(rows) if rows else NO_TRAINED_TOKENS
    if sample.kind == "chat":
        row = next(renders.chats)
        if output == "prompts":  # the prompt is what RL trains on; the reply may not fit
            return _with_prompt(Prepared([row] if row.trained_tokens else []), renders, max_length)
        return Prepared([row]) if row.trained_tokens else NO_TRAINED_TOKENS
    if sample.kind == "unpaired":
        row = next(renders.replies)
        if not row.trained_tokens:
            return NO_TRAINED_TOKENS
        return Prepared([row] if sample.label else [], unpaired=[(row, bool(sample.label))])
    chosen = next(renders.replies)
    if output == "prompts":
        rows = [chosen] if chosen.trained_tokens else []
        return _with_prompt(Prepared(rows), renders, max_length)
    rejected = next(renders.replies)
    if not (chosen.trained_tokens and rejected.trained_tokens):
        return NO_TRAINED_TOKENS
    if output == "unpaired":
        return Prepared([chosen], unpaired=[(chosen, True), (rejected, False)])
    return Prepared([chosen], pair=(chosen, rejected))


def _with_prompt(item: Prepared, renders: _Renders, max_length: int) -> Prepared | str:
    prompt = next(renders.prompts)
    if not prompt.ids:
        return "empty_prompt"
    if len(prompt.ids) >= max_length:
        return "prompt_too_long"
    item.prompt = prompt
    return item


def _books(
    source: DatasetStream | SourcesStream,
    stats: list[StepStats],
    writers: dict[str, SplitWriter],
    packing: dict[str, Any],
    mixed: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The stage summary; with a mixture, ``mix`` (per source) and ``repeated`` copies too."""
    dropped: Counter[str] = Counter()
    for step in stats:
        dropped.update(step.dropped)
    books = {
        "read": source.read,
        "expanded": source.expanded,
        "kept": sum(w.samples for w in writers.values()),
        "dropped": dict(dropped),
        "quarantined": sum(source.reasons.values()),
        "files": {name: counts.to_json() for name, counts in source.files.items()},
        "steps": [step.to_json() for step in stats],
        "splits": {name: w.samples for name, w in writers.items()},
        "tokens": {name: sum(w.lengths) for name, w in writers.items()},
        "trained_tokens": {name: w.trained_tokens for name, w in writers.items()},
        "packing": packing,
    }
    output = writers["train"].output
    if output is not None:
        books[output] = {name: w.output_counts() for name, w in writers.items()}
    if mixed is not None:  # a mixture's copies are counted like expanded records
        books["repeated"] = sum(row["repeated"] for row in mixed["sources"].values())
        books["mix"] = mixed
    accounted = books["kept"] + sum(dropped.values()) + books["quarantined"]
    if books["read"] + books["expanded"] + books.get("repeated", 0) != accounted:
        raise AssertionError(f"data books do not balance: {books}")
    return books


def _report(
    books: dict[str, Any],
    source: DatasetStream | SourcesStream,
    steps: list,
    writers: dict[str, SplitWriter],
    listed: bool,
) -> dict[str, Any]:
    """What the data report shows; ``listed`` says whether dropped samples were listed."""
    return {
        "books": books,
        "steps": books["steps"],
        "lengths": {n: w.lengths for n, w in writers.items()},
        "trained_tokens": books["trained_tokens"],
        "conversations": _merged_conversations(writers.values()),
        "packing": books["packing"],
        "pii": next((dict(s.counts_by_type) for s in steps if s.name == "pii"), {}),
        "clusters": cluster_report(steps),
        "quarantine": {"reasons": dict(source.reasons)},
        "dropped_file": DROPPED_FILE if listed else None,
    }


def _merged_conversations(writers: Iterable[SplitWriter]) -> dict[str, Any]:
    merged = ConversationStats()
    for writer in writers:
        merged.roles.update(writer.conversations.roles)
        merged.turns.update(writer.conversations.turns)
    return merged.to_json()


def _why(source: DatasetStream | SourcesStream, stats: list[StepStats]) -> str:
    reasons: Counter[str] = Counter(source.reasons)
    for step in stats:
        reasons.update(step.dropped)
    return ", ".join(f"{n} x {r}" for r, n in reasons.most_common(3))


def read_split(stage_dir: Path, split: str) -> list[dict[str, Any]]:
    """The records of one split as written by :func:`prepare_data`."""
    path = stage_dir / "samples" / f"{split}.jsonl"
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def read_tokens(stage_dir: Path, split: str) -> tuple[list[list[int]], list[list[int]]]:
    """The (input_ids, labels) rows of one split."""
    table = pq.read_table(stage_dir / "tokens" / f"{split}.parquet")
    return table.column("input_ids").to_pylist(), table.column("labels").to_pylist()
