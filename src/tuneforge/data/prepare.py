"""The data stage: read, render with the model's chat template, split, write, and keep the books."""

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
from tuneforge.data.readers import read_dataset
from tuneforge.data.render import render_chat
from tuneforge.data.sample import Sample
from tuneforge.data.split import split_samples
from tuneforge.errors import DataError

SPLITS = ("train", "val", "test")


def prepare_data(
    data: DataConfig, tokenizer: PreTrainedTokenizerBase, seed: int, out_dir: Path
) -> dict[str, Any]:
    """Write ``samples/<split>.jsonl``, ``tokens/<split>.parquet`` and ``quarantine.jsonl``.

    Returns:
        The books: read, kept, dropped by reason, quarantined, per-split counts and tokens.

    Raises:
        DataError: no usable sample remains, or the training split would be empty.
    """
    result = read_dataset(data.path, data.format, data.system_prompt, data.max_samples)
    _write_jsonl(out_dir / "quarantine.jsonl", [q.to_json() for q in result.quarantined])
    dropped: Counter[str] = Counter()
    kept: list[Sample] = []
    rendered = {}
    with progress() as bar:
        task = bar.add_task("render", total=len(result.samples), info="")
        for sample in result.samples:
            tokens = render_chat(tokenizer, sample.messages, max_length=data.max_length)
            bar.advance(task)
            if tokens.trained_tokens == 0:
                dropped["no_trained_tokens_within_max_length"] += 1
                continue
            kept.append(sample)
            rendered[id(sample)] = tokens
    if not kept:
        reasons = Counter(q.reason for q in result.quarantined) + dropped
        common = ", ".join(f"{n} x {r}" for r, n in reasons.most_common(3))
        raise DataError(f"data.path {data.path!r}: no usable samples ({common})")
    splits = split_samples(kept, data.val_fraction, data.test_fraction, seed)
    if not splits["train"]:
        raise DataError(f"data.path {data.path!r}: too few samples for a training split")
    books = {
        "read": result.read,
        "kept": len(kept),
        "dropped": dict(dropped),
        "quarantined": len(result.quarantined),
        "splits": {name: len(samples) for name, samples in splits.items()},
    }
    if books["read"] != books["kept"] + sum(dropped.values()) + books["quarantined"]:
        raise AssertionError(f"data books do not balance: {books}")
    for name in SPLITS:
        _write_split(out_dir, name, splits[name], rendered)
    books["tokens"] = {
        name: sum(len(rendered[id(s)].input_ids) for s in splits[name]) for name in SPLITS
    }
    books["trained_tokens"] = {
        name: sum(rendered[id(s)].trained_tokens for s in splits[name]) for name in SPLITS
    }
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


def _write_split(out_dir: Path, name: str, samples: list[Sample], rendered: dict) -> None:
    records = [{"id": s.id, "source": s.source, **s.to_openai()} for s in samples]
    _write_jsonl(out_dir / "samples" / f"{name}.jsonl", records)
    table = pa.table(
        {
            "id": [s.id for s in samples],
            "input_ids": pa.array(
                [rendered[id(s)].input_ids for s in samples], pa.list_(pa.int32())
            ),
            "labels": pa.array([rendered[id(s)].labels for s in samples], pa.list_(pa.int32())),
        }
    )
    (out_dir / "tokens").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out_dir / "tokens" / f"{name}.parquet")


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
