"""Where the data stage's prepared splits go: JSONL samples, token rows and packed rows.

Everything is written as it streams in, a batch at a time (Parquet row groups),
so the stage never holds a split in memory:

* ``samples/<split>.jsonl``: the kept samples as OpenAI fine-tuning records,
  with their ``id`` and ``source``;
* ``tokens/<split>.parquet``: ``id``, ``input_ids`` and ``labels`` per sample
  (loadable with ``datasets.load_dataset("parquet", ...)``);
* ``packed/<split>.parquet``: the same tokens packed padding-free into rows of
  ``pack_length`` by best-fit-decreasing (:mod:`tuneforge.data.packing`), with
  ``position_ids`` restarting per sample and the sample ``lengths`` from which
  the trainer builds the block-diagonal causal mask.

Packing is best-fit-decreasing over windows of :data:`PACK_WINDOW` samples
rather than the whole split, so memory stays bounded; with thousands of
samples per window the rows are as full as a global packing would make them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tuneforge.data.packing import pack
from tuneforge.data.render import Rendered
from tuneforge.data.report import ConversationStats
from tuneforge.data.sample import Sample
from tuneforge.data.writers import openai_record
from tuneforge.runs.hashing import file_sha256

PACK_WINDOW = 2048  # samples per best-fit-decreasing window (their token lists are in memory)

_IDS = pa.list_(pa.int32())
TOKEN_SCHEMA = pa.schema([("id", pa.string()), ("input_ids", _IDS), ("labels", _IDS)])
PACKED_SCHEMA = pa.schema(
    [("input_ids", _IDS), ("labels", _IDS), ("position_ids", _IDS), ("lengths", _IDS)]
)


class SplitWriter:
    """Writes one split's samples, token rows and (optionally) packed rows as they come.

    Attributes:
        lengths: Token count of every token row written, in order (for the report).
        samples: Samples written (a long text sample may give several rows).
        trained_tokens: Tokens that carry loss, in all.
        conversations: Role and turn counts of the samples written.
    """

    def __init__(self, out_dir: Path, name: str, pack_length: int | None) -> None:
        self.name = name
        for folder in ("samples", "tokens", "packed"):
            (out_dir / folder).mkdir(parents=True, exist_ok=True)
        # Open for the split's lifetime, closed by close(); the stage folder is temporary
        # until the stage succeeds, so a failure never leaves a half-written split behind.
        self._samples = open(out_dir / "samples" / f"{name}.jsonl", "w", encoding="utf-8")  # noqa: SIM115
        self._tokens = pq.ParquetWriter(out_dir / "tokens" / f"{name}.parquet", TOKEN_SCHEMA)
        self._packer = (
            Packer(out_dir / "packed" / f"{name}.parquet", pack_length) if pack_length else None
        )
        self.lengths: list[int] = []
        self.samples = 0
        self.trained_tokens = 0
        self.conversations = ConversationStats()

    def write(self, samples: Sequence[Sample], rendered: Sequence[Sequence[Rendered]]) -> None:
        """Append a batch of samples, each with its token rows (several for chunked text)."""
        if not samples:
            return
        ids, labels, owners = [], [], []
        for sample, rows in zip(samples, rendered, strict=True):
            record = {"id": sample.id, "source": sample.source, **openai_record(sample)}
            self._samples.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.conversations.add(sample)
            for tokens in rows:
                ids.append(tokens.input_ids)
                labels.append(tokens.labels)
                owners.append(sample.id)
                self.lengths.append(len(tokens.input_ids))
                self.trained_tokens += tokens.trained_tokens
        self.samples += len(samples)
        table = {"id": owners, "input_ids": pa.array(ids, _IDS), "labels": pa.array(labels, _IDS)}
        self._tokens.write_table(pa.table(table, schema=TOKEN_SCHEMA))
        if self._packer is not None:
            self._packer.add(ids, labels)

    def close(self) -> dict[str, Any] | None:
        """Finish the files; returns the packing figures (or None without packing)."""
        self._samples.close()
        self._tokens.close()
        return self._packer.close() if self._packer is not None else None


class Packer:
    """Packs token rows into ``packed/<split>.parquet`` a window at a time."""

    def __init__(self, path: Path, seq_len: int, window: int = PACK_WINDOW) -> None:
        self.seq_len, self.window = seq_len, window
        self._writer = pq.ParquetWriter(path, PACKED_SCHEMA)
        self._ids: list[list[int]] = []
        self._labels: list[list[int]] = []
        self.rows = self.samples = self.tokens = 0

    def add(self, ids: Sequence[list[int]], labels: Sequence[list[int]]) -> None:
        self._ids.extend(ids)
        self._labels.extend(labels)
        if len(self._ids) >= self.window:
            self._flush()

    def close(self) -> dict[str, Any]:
        self._flush()
        self._writer.close()
        slots = self.rows * self.seq_len
        return {
            "samples": self.samples,
            "rows": self.rows,
            "seq_len": self.seq_len,
            "tokens": self.tokens,
            "efficiency": round(self.tokens / slots, 4) if slots else 0.0,
        }

    def _flush(self) -> None:
        if not self._ids:
            return
        packing = pack(self._ids, self._labels, self.seq_len)
        if packing.too_long:  # the config guarantees pack_length >= max_length
            raise AssertionError(f"{len(packing.too_long)} samples longer than a packed row")
        rows = packing.rows
        columns = {
            "input_ids": [r.input_ids for r in rows],
            "labels": [r.labels for r in rows],
            "position_ids": [r.position_ids for r in rows],
            "lengths": [r.lengths for r in rows],
        }
        table = pa.table({k: pa.array(v, _IDS) for k, v in columns.items()}, schema=PACKED_SCHEMA)
        self._writer.write_table(table)
        self.rows += len(rows)
        self.samples += len(self._ids)
        self.tokens += sum(len(r.input_ids) for r in rows)
        self._ids, self._labels = [], []


def output_hashes(out_dir: Path) -> dict[str, str]:
    """sha256 of every prepared file (samples, tokens, packed, quarantine) by relative name."""
    wanted = ["quarantine.jsonl", "samples/*.jsonl", "tokens/*.parquet", "packed/*.parquet"]
    files = sorted({p for pattern in wanted for p in out_dir.glob(pattern) if p.is_file()})
    return {str(p.relative_to(out_dir)): file_sha256(p) for p in files}


def read_packed(stage_dir: Path, split: str) -> pa.Table:
    """The packed rows of one split: input_ids, labels, position_ids, lengths."""
    return pq.read_table(stage_dir / "packed" / f"{split}.parquet")
