"""The data stage: read, clean, dedup, scrub, split, decontaminate, render, write, report.

Every record read is accounted for: ``read = kept + dropped + quarantined``,
with the reasons, per step, in the stage summary, the manifest and the report.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from transformers import PreTrainedTokenizerBase

from tuneforge.config.schema import DataConfig
from tuneforge.console import progress
from tuneforge.data.configure import build_decontaminate, build_steps, cluster_report
from tuneforge.data.readers import read_dataset
from tuneforge.data.render import Rendered, render_chat
from tuneforge.data.report import conversation_stats, write_report
from tuneforge.data.sample import Sample
from tuneforge.data.split import split_samples
from tuneforge.data.steps import StepStats, run_steps
from tuneforge.data.writers import write_jsonl, write_quarantine
from tuneforge.errors import DataError

SPLITS = ("train", "val", "test")


def prepare_data(
    data: DataConfig, tokenizer: PreTrainedTokenizerBase, seed: int, out_dir: Path
) -> dict[str, Any]:
    """Write ``samples/<split>.jsonl``, ``tokens/<split>.parquet``, ``quarantine.jsonl``, reports.

    Returns:
        The books: read, kept, dropped by reason, quarantined, per-step counts,
        per-split counts and tokens.

    Raises:
        DataError: no usable sample remains, or the training split would be empty.
    """
    result = read_dataset(
        data.path,
        data.format,
        data.system_prompt,
        data.max_samples,
        mapping=data.mapping or None,
        strict=data.strict,
    )
    write_quarantine(result.quarantined, out_dir / "quarantine.jsonl")
    steps = build_steps(data, tokenizer)
    if data.engine == "spark":
        from tuneforge.data.spark import run_steps_spark

        kept, stats = run_steps_spark(
            result.samples, steps, data.spark_master, data.spark_partitions
        )
    else:
        kept, stats = run_steps(result.samples, steps)
    if not kept:
        raise DataError(f"data.path {data.path!r}: no usable samples ({_why(result, stats)})")
    splits = split_samples(kept, data.val_fraction, data.test_fraction, seed)
    decontaminate = build_decontaminate(data, splits["val"] + splits["test"])
    if decontaminate is not None:
        splits["train"], more = run_steps(splits["train"], [decontaminate])
        stats += more
    rendered, render_stats = _render(splits, tokenizer, data)
    stats.append(render_stats)
    if not splits["train"]:
        raise DataError(f"data.path {data.path!r}: too few samples for a training split")
    books = _books(result, stats, splits)
    for name in SPLITS:
        _write_split(out_dir, name, splits[name], rendered)
    lengths = {n: [len(rendered[id(s)].input_ids) for s in splits[n]] for n in SPLITS}
    books["tokens"] = {n: sum(v) for n, v in lengths.items()}
    books["trained_tokens"] = {
        n: sum(rendered[id(s)].trained_tokens for s in splits[n]) for n in SPLITS
    }
    pii = next((s for s in steps if s.name == "pii"), None)
    report = {
        "books": books,
        "steps": books["steps"],
        "lengths": lengths,
        "trained_tokens": books["trained_tokens"],
        "conversations": conversation_stats([s for n in SPLITS for s in splits[n]]),
        "pii": dict(pii.counts_by_type) if pii else {},
        "clusters": cluster_report(steps),
        "quarantine": {"reasons": dict(Counter(q.reason for q in result.quarantined))},
    }
    write_report(out_dir, report)
    return books


def read_split(stage_dir: Path, split: str) -> list[dict[str, Any]]:
    """The records of one split as written by :func:`prepare_data`."""
    path = stage_dir / "samples" / f"{split}.jsonl"
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def read_tokens(stage_dir: Path, split: str) -> tuple[list[list[int]], list[list[int]]]:
    """The (input_ids, labels) rows of one split."""
    table = pq.read_table(stage_dir / "tokens" / f"{split}.parquet")
    return table.column("input_ids").to_pylist(), table.column("labels").to_pylist()


def _render(
    splits: dict[str, list[Sample]], tokenizer: PreTrainedTokenizerBase, data: DataConfig
) -> tuple[dict[int, Rendered], StepStats]:
    """Render every sample; drop those whose reply does not fit in ``max_length``."""
    stats = StepStats("render")
    rendered: dict[int, Rendered] = {}
    with progress() as bar:
        task = bar.add_task("render", total=sum(len(v) for v in splits.values()), info="")
        for name in SPLITS:
            survivors = []
            for sample in splits[name]:
                stats.seen += 1
                tokens = render_chat(
                    tokenizer,
                    sample.messages,
                    max_length=data.max_length,
                    train_on=data.train_on,
                    tools=sample.tools,
                    template=data.template,
                )
                bar.advance(task)
                if tokens.trained_tokens == 0:
                    stats.dropped["no_trained_tokens_within_max_length"] += 1
                    continue
                stats.kept += 1
                survivors.append(sample)
                rendered[id(sample)] = tokens
            splits[name] = survivors
    return rendered, stats


def _books(result, stats: list[StepStats], splits: dict[str, list[Sample]]) -> dict[str, Any]:
    dropped: Counter[str] = Counter()
    for step in stats:
        dropped.update(step.dropped)
    books = {
        "read": result.read,
        "kept": sum(len(v) for v in splits.values()),
        "dropped": dict(dropped),
        "quarantined": len(result.quarantined),
        "files": {name: counts.to_json() for name, counts in result.files.items()},
        "steps": [step.to_json() for step in stats],
        "splits": {name: len(samples) for name, samples in splits.items()},
    }
    if books["read"] != books["kept"] + sum(dropped.values()) + books["quarantined"]:
        raise AssertionError(f"data books do not balance: {books}")
    return books


def _why(result, stats: list[StepStats]) -> str:
    reasons: Counter[str] = Counter(q.reason for q in result.quarantined)
    for step in stats:
        reasons.update(step.dropped)
    return ", ".join(f"{n} x {r}" for r, n in reasons.most_common(3))


def _write_split(out_dir: Path, name: str, samples: list[Sample], rendered: dict) -> None:
    records = [{"id": s.id, "source": s.source, **s.to_openai()} for s in samples]
    write_jsonl(records, out_dir / "samples" / f"{name}.jsonl")
    ids = pa.array([rendered[id(s)].input_ids for s in samples], pa.list_(pa.int32()))
    labels = pa.array([rendered[id(s)].labels for s in samples], pa.list_(pa.int32()))
    table = pa.table({"id": [s.id for s in samples], "input_ids": ids, "labels": labels})
    (out_dir / "tokens").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out_dir / "tokens" / f"{name}.parquet")
