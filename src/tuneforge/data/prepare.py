"""The data stage: read, clean, dedup, scrub, split, decontaminate, render, write, report.

Every record read is accounted for: ``read = kept + dropped + quarantined``,
with the reasons, per step, in the stage summary, the manifest and the report.

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
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from transformers import PreTrainedTokenizerBase

from tuneforge.config.schema import DataConfig
from tuneforge.console import progress
from tuneforge.data.configure import build_decontaminate, build_steps, cluster_report
from tuneforge.data.readers import DatasetStream
from tuneforge.data.render import Rendered, render_chat_batch, render_text
from tuneforge.data.report import ConversationStats, write_report
from tuneforge.data.sample import Sample
from tuneforge.data.shards import SplitWriter, output_hashes
from tuneforge.data.split import SPLITS, assign_splits, group_rank
from tuneforge.data.steps import StepStats, chain_steps, check_balanced
from tuneforge.errors import DataError

RENDER_BATCH = 512  # samples rendered (and written) together


def prepare_data(
    data: DataConfig,
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
    out_dir: Path,
    objective: str = "sft",
) -> dict[str, Any]:
    """Write ``samples/``, ``tokens/``, ``packed/`` per split, ``quarantine.jsonl`` and reports.

    Returns:
        The books: read, kept, dropped by reason, quarantined, per-step counts,
        per-split counts, tokens, packing and the sha256 of every output file.

    Raises:
        DataError: no usable sample remains, or the training split would be empty.
    """
    work = out_dir / ".work"
    work.mkdir(parents=True, exist_ok=True)
    steps = build_steps(data, tokenizer, objective)
    with open(out_dir / "quarantine.jsonl", "w", encoding="utf-8") as quarantine:
        source = DatasetStream(
            data.path,
            data.format,
            data.system_prompt,
            data.max_samples,
            mapping=data.mapping or None,
            strict=data.strict,
            on_quarantine=lambda q: quarantine.write(json.dumps(q.to_json()) + "\n"),
        )
        survivors, stats = _clean(source, steps, data)
        ranks = _spill(survivors, work / "kept.jsonl", seed)
    check_balanced(stats)
    if not ranks:
        raise DataError(f"data.path {data.path!r}: no usable samples ({_why(source, stats)})")
    assigned = assign_splits(ranks, data.val_fraction, data.test_fraction)
    del ranks
    writers, render_stats = _write_splits(data, tokenizer, work / "kept.jsonl", assigned, stats)
    shutil.rmtree(work)
    packing = {name: figures for name, w in writers.items() if (figures := w.close())}
    if not writers["train"].samples:
        raise DataError(
            f"data.path {data.path!r}: no training samples left ({_why(source, stats)})"
        )
    stats.append(render_stats)
    check_balanced(stats)
    books = _books(source, stats, writers, packing)
    report = {
        "books": books,
        "steps": books["steps"],
        "lengths": {n: w.lengths for n, w in writers.items()},
        "trained_tokens": books["trained_tokens"],
        "conversations": _merged_conversations(writers.values()),
        "packing": packing,
        "pii": next((dict(s.counts_by_type) for s in steps if s.name == "pii"), {}),
        "clusters": cluster_report(steps),
        "quarantine": {"reasons": dict(source.reasons)},
    }
    write_report(out_dir, report)
    books["outputs"] = output_hashes(out_dir)
    return books


def _clean(
    source: DatasetStream, steps: list, data: DataConfig
) -> tuple[Iterable[Sample], list[StepStats]]:
    """The samples that pass the steps, streamed (local) or collected (Spark)."""
    if data.engine == "spark":
        from tuneforge.data.spark import run_steps_spark

        return run_steps_spark(list(source), steps, data.spark_master, data.spark_partitions)
    return chain_steps(source, steps)


def _spill(samples: Iterable[Sample], path: Path, seed: int) -> list[bytes]:
    """Write the survivors to disk, one JSON line each; return each one's split-group rank."""
    ranks = []
    with open(path, "w", encoding="utf-8") as handle:
        for sample in samples:
            handle.write(json.dumps(dataclasses.asdict(sample), default=str) + "\n")
            ranks.append(group_rank(sample, seed))
    return ranks


def _read_back(path: Path, assigned: list[str], wanted: tuple[str, ...]) -> Iterator[Sample]:
    """The spilled samples whose split is in ``wanted``, in file order."""
    with open(path, encoding="utf-8") as handle:
        for line, split in zip(handle, assigned, strict=True):
            if split in wanted:
                yield Sample(**json.loads(line))


def _write_splits(
    data: DataConfig,
    tokenizer: PreTrainedTokenizerBase,
    spill: Path,
    assigned: list[str],
    stats: list[StepStats],
) -> tuple[dict[str, SplitWriter], StepStats]:
    """Held-out splits first (they feed decontamination), then the training split."""
    pack_length = (data.pack_length or data.max_length) if data.packing else None
    writers = {name: SplitWriter(spill.parent.parent, name, pack_length) for name in SPLITS}
    render_stats = StepStats("render")
    decontaminate = build_decontaminate(data, _read_back(spill, assigned, ("val", "test")))
    train: Iterable[Sample] = _read_back(spill, assigned, ("train",))
    if decontaminate is not None:
        record = StepStats(decontaminate.name)
        stats.append(record)
        train = decontaminate(train, record)
    with progress() as bar:
        task = bar.add_task("render", total=len(assigned), info="")
        for name, stream in (
            ("val", _read_back(spill, assigned, ("val",))),
            ("test", _read_back(spill, assigned, ("test",))),
            ("train", train),
        ):
            for batch in _batches(stream, RENDER_BATCH):
                kept, rendered = _render(batch, tokenizer, data, render_stats)
                writers[name].write(kept, rendered)
                bar.advance(task, len(batch))
    return writers, render_stats


def _batches(samples: Iterable[Sample], size: int) -> Iterator[list[Sample]]:
    iterator = iter(samples)
    while batch := list(islice(iterator, size)):
        yield batch


def _render(
    batch: list[Sample], tokenizer: PreTrainedTokenizerBase, data: DataConfig, stats: StepStats
) -> tuple[list[Sample], list[list[Rendered]]]:
    """Render a batch; drop samples with no trained token left within ``max_length``.

    Chat samples go through the chat template in one batched call (one row
    each); text samples (continued pre-training) become ``max_length`` rows
    trained on every token.
    """
    chats = [s for s in batch if s.kind != "text"]
    rendered_chats = iter(
        render_chat_batch(
            tokenizer,
            [(s.messages, s.tools) for s in chats],
            max_length=data.max_length,
            train_on=data.train_on,
            template=data.template,
        )
    )
    kept, rendered = [], []
    for sample in batch:
        if sample.kind == "text":
            rows = render_text(tokenizer, sample.text or "", data.max_length)
        else:
            rows = [next(rendered_chats)]
        stats.seen += 1
        rows = [row for row in rows if row.trained_tokens]
        if not rows:
            stats.dropped["no_trained_tokens_within_max_length"] += 1
            continue
        stats.kept += 1
        kept.append(sample)
        rendered.append(rows)
    return kept, rendered


def _books(
    source: DatasetStream,
    stats: list[StepStats],
    writers: dict[str, SplitWriter],
    packing: dict[str, Any],
) -> dict[str, Any]:
    dropped: Counter[str] = Counter()
    for step in stats:
        dropped.update(step.dropped)
    books = {
        "read": source.read,
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
    if books["read"] != books["kept"] + sum(dropped.values()) + books["quarantined"]:
        raise AssertionError(f"data books do not balance: {books}")
    return books


def _merged_conversations(writers: Iterable[SplitWriter]) -> dict[str, Any]:
    merged = ConversationStats()
    for writer in writers:
        merged.roles.update(writer.conversations.roles)
        merged.turns.update(writer.conversations.turns)
    return merged.to_json()


def _why(source: DatasetStream, stats: list[StepStats]) -> str:
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
