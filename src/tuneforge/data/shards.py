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
  the trainer builds the block-diagonal causal mask;
* for the preference and RL objectives, one of (:data:`OUTPUT_SCHEMAS`):
  ``pairs/<split>.parquet`` (reward, dpo, orpo, simpo): ``id``,
  ``chosen_input_ids``, ``chosen_labels``, ``rejected_input_ids``,
  ``rejected_labels``, ``margin``; ``unpaired/<split>.parquet`` (kto): ``id``,
  ``input_ids``, ``labels``, ``label`` (true: desirable); ``prompts/<split>.parquet``
  (grpo, rloo): ``id``, ``prompt_ids``, ``prompt`` (the messages as JSON),
  ``tools`` (JSON, or ``""``), ``reference`` (the reply the data gives, or ``""``).

Packing is best-fit-decreasing over windows of :data:`PACK_WINDOW` samples
rather than the whole split, so memory stays bounded; with thousands of
samples per window the rows are as full as a global packing would make them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tuneforge.data.packing import pack
from tuneforge.data.render import Rendered, Tools
from tuneforge.data.report import ConversationStats
from tuneforge.data.sample import Message, Sample
from tuneforge.data.writers import openai_record
from tuneforge.runs.hashing import file_sha256

PACK_WINDOW = 2048  # samples per best-fit-decreasing window (their token lists are in memory)

_IDS = pa.list_(pa.int32())
TOKEN_SCHEMA = pa.schema([("id", pa.string()), ("input_ids", _IDS), ("labels", _IDS)])
PACKED_SCHEMA = pa.schema(
    [("input_ids", _IDS), ("labels", _IDS), ("position_ids", _IDS), ("lengths", _IDS)]
)
PAIR_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("chosen_input_ids", _IDS),
        ("chosen_labels", _IDS),
        ("rejected_input_ids", _IDS),
        ("rejected_labels", _IDS),
        ("margin", pa.float32()),
    ]
)
UNPAIRED_SCHEMA = pa.schema(
    [("id", pa.string()), ("input_ids", _IDS), ("labels", _IDS), ("label", pa.bool_())]
)
PROMPT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("prompt_ids", _IDS),
        ("prompt", pa.string()),
        ("tools", pa.string()),
        ("reference", pa.string()),
    ]
)
OUTPUT_SCHEMAS = {"pairs": PAIR_SCHEMA, "unpaired": UNPAIRED_SCHEMA, "prompts": PROMPT_SCHEMA}


@dataclass
class PromptRow:
    """The prompt of one sample for online RL, and the reply the data gives for it."""

    ids: list[int]
    messages: list[Message]
    tools: Tools
    reference: str


@dataclass
class Prepared:
    """What one kept sample contributes to each output of its split.

    Attributes:
        rows: Token rows for ``tokens/`` (and ``packed/``): several for chunked text,
            none for a KTO-undesirable sample.
        pair: Chosen and rejected rows, for ``pairs/``.
        unpaired: ``(row, desirable)`` rows, for ``unpaired/``.
        prompt: The prompt, for ``prompts/``.
    """

    rows: list[Rendered]
    pair: tuple[Rendered, Rendered] | None = None
    unpaired: list[tuple[Rendered, bool]] = field(default_factory=list)
    prompt: PromptRow | None = None


class SplitWriter:
    """Writes one split's samples, token rows, objective rows and packed rows as they come.

    Attributes:
        lengths: Token count of every token row written, in order (for the report).
        samples: Samples written (a long text sample may give several rows).
        trained_tokens: Tokens that carry loss, in all.
        conversations: Role and turn counts of the samples written.
        output: The objective's folder (``pairs``, ``unpaired``, ``prompts``) or None.
        output_rows: Rows written to that folder, by label for ``unpaired``.
    """

    def __init__(
        self, out_dir: Path, name: str, pack_length: int | None, output: str | None = None
    ) -> None:
        self.name, self.output = name, output
        for folder in ("samples", "tokens", "packed", *([output] if output else [])):
            (out_dir / folder).mkdir(parents=True, exist_ok=True)
        # Open for the split's lifetime, closed by close(); the stage folder is temporary
        # until the stage succeeds, so a failure never leaves a half-written split behind.
        self._samples = open(out_dir / "samples" / f"{name}.jsonl", "w", encoding="utf-8")  # noqa: SIM115
        self._tokens = pq.ParquetWriter(out_dir / "tokens" / f"{name}.parquet", TOKEN_SCHEMA)
        self._packer = (
            Packer(out_dir / "packed" / f"{name}.parquet", pack_length) if pack_length else None
        )
        self._output = (
            pq.ParquetWriter(out_dir / output / f"{name}.parquet", OUTPUT_SCHEMAS[output])
            if output
            else None
        )
        self.lengths: list[int] = []
        self.samples = 0
        self.trained_tokens = 0
        self.conversations = ConversationStats()
        self.output_rows: Counter[str] = Counter()

    def write(self, samples: Sequence[Sample], prepared: Sequence[Prepared]) -> None:
        """Append a batch of samples, each with what it contributes to every output."""
        if not samples:
            return
        ids, labels, owners = [], [], []
        for sample, item in zip(samples, prepared, strict=True):
            record = {"id": sample.id, "source": sample.source, **openai_record(sample)}
            if sample.meta:  # provenance (document chunk, teacher, category) travels on
                record["meta"] = sample.meta
            self._samples.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.conversations.add(sample)
            for tokens in item.rows:
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
        if self._output is not None:
            self._write_output(samples, prepared)

    def _write_output(self, samples: Sequence[Sample], prepared: Sequence[Prepared]) -> None:
        build = _OUTPUT_ROWS[self.output]
        rows = [row for s, item in zip(samples, prepared, strict=True) for row in build(s, item)]
        if self.output == "unpaired":
            self.output_rows.update("desirable" if r["label"] else "undesirable" for r in rows)
        else:
            self.output_rows[self.output] += len(rows)
        if rows:
            table = pa.Table.from_pylist(rows, schema=OUTPUT_SCHEMAS[self.output])
            self._output.write_table(table)

    def output_counts(self) -> int | dict[str, int] | None:
        """Rows in the objective's folder (desirable / undesirable for unpaired), or None."""
        if self.output is None:
            return None
        if self.output == "unpaired":
            return {label: self.output_rows[label] for label in ("desirable", "undesirable")}
        return self.output_rows[self.output]

    def close(self) -> dict[str, Any] | None:
        """Finish the files; returns the packing figures (or None without packing)."""
        self._samples.close()
        self._tokens.close()
        if self._output is not None:
            self._output.close()
        return self._packer.close() if self._packer is not None else None


def _pair_rows(sample: Sample, item: Prepared) -> list[dict[str, Any]]:
    if item.pair is None:
        return []
    chosen, rejected = item.pair
    return [
        {
            "id": sample.id,
            "chosen_input_ids": chosen.input_ids,
            "chosen_labels": chosen.labels,
            "rejected_input_ids": rejected.input_ids,
            "rejected_labels": rejected.labels,
            "margin": float(sample.meta.get("margin", 0.0)),
        }
    ]


def _unpaired_rows(sample: Sample, item: Prepared) -> list[dict[str, Any]]:
    return [
        {"id": sample.id, "input_ids": row.input_ids, "labels": row.labels, "label": label}
        for row, label in item.unpaired
    ]


def _prompt_rows(sample: Sample, item: Prepared) -> list[dict[str, Any]]:
    prompt = item.prompt
    if prompt is None:
        return []
    tools = json.dumps(prompt.tools, ensure_ascii=False) if prompt.tools else ""
    return [
        {
            "id": sample.id,
            "prompt_ids": prompt.ids,
            "prompt": json.dumps(prompt.messages, ensure_ascii=False),
            "tools": tools,
            "reference": prompt.reference,
        }
    ]


_OUTPUT_ROWS: dict[str, Callable[[Sample, Prepared], list[dict[str, Any]]]] = {
    "pairs": _pair_rows,
    "unpaired": _unpaired_rows,
    "prompts": _prompt_rows,
}


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
    """sha256 of every prepared file (samples, tokens, packed, pairs, ...) by relative name."""
    folders = ["tokens", "packed", *OUTPUT_SCHEMAS]
    listed = ["quarantine.jsonl", "dropped.jsonl", "samples/*.jsonl"]
    wanted = [*listed, *(f"{f}/*.parquet" for f in folders)]
    files = sorted({p for pattern in wanted for p in out_dir.glob(pattern) if p.is_file()})
    return {str(p.relative_to(out_dir)): file_sha256(p) for p in files}


def read_packed(stage_dir: Path, split: str) -> pa.Table:
    """The packed rows of one split: input_ids, labels, position_ids, lengths."""
    return pq.read_table(stage_dir / "packed" / f"{split}.parquet")


def read_pairs(stage_dir: Path, split: str) -> pa.Table:
    """The preference pairs of one split: the columns of :data:`PAIR_SCHEMA`."""
    return pq.read_table(stage_dir / "pairs" / f"{split}.parquet")


def read_unpaired(stage_dir: Path, split: str) -> pa.Table:
    """The unpaired (KTO) rows of one split: the columns of :data:`UNPAIRED_SCHEMA`."""
    return pq.read_table(stage_dir / "unpaired" / f"{split}.parquet")


def read_prompts(stage_dir: Path, split: str) -> pa.Table:
    """The RL prompts of one split: the columns of :data:`PROMPT_SCHEMA`."""
    return pq.read_table(stage_dir / "prompts" / f"{split}.parquet")
