"""What the Data tab shows: a prepared dataset page by page, and what was set aside.

A page shows each sample as the model saw it: the chat template rendered to
tokens by the training renderer (``data/tokens/<split>.parquet``), with the
tokens that carry loss (label not -100) highlighted. Beside them: the quarantine
(records that could not be read, with the reader's reason), the dropped records
(with the step and reason) and the data report.
"""

from __future__ import annotations

import html
import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from tuneforge.runs.catalog import RunInfo

IGNORE = -100  # the label of a token that carries no loss
TABLE_ROWS = 500  # most quarantined or dropped records shown in a table
QUARANTINE_COLUMNS = ("source", "reason", "raw")
DROPPED_COLUMNS = ("source", "step", "reason", "excerpt")


def splits(run: RunInfo) -> list[str]:
    """The prepared splits of a run (``train``, ``val``, ``test``), train first."""
    found = [file.stem for file in (run.path / "data" / "tokens").glob("*.parquet")]
    order = {"train": 0, "val": 1, "test": 2}
    return sorted(found, key=lambda name: (order.get(name, 3), name))


def page_count(run: RunInfo, split: str, page_size: int) -> int:
    """How many pages of ``page_size`` samples the split has (at least 1)."""
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(_tokens_file(run, split)).metadata.num_rows
    return max(1, math.ceil(rows / page_size))


def data_page(run: RunInfo, split: str, page: int, page_size: int = 5) -> str:
    """HTML of page ``page`` (1-based) of a split: each sample's rendered tokens.

    Raises:
        FileNotFoundError: the run has no such prepared split.
    """
    import pyarrow.parquet as pq

    file = pq.ParquetFile(_tokens_file(run, split))
    start = (max(1, page) - 1) * page_size
    rows = read_rows(file, start, page_size)
    tokenizer = run_tokenizer(str(run.path))
    parts = [
        f'<div class="tf-legend"><span class="tf-trained">trained tokens</span> '
        f'<span class="tf-prompt">context (no loss)</span> &middot; samples {start + 1}-'
        f"{start + len(rows)} of {file.metadata.num_rows}</div>"
    ]
    for row in rows:
        parts.append(_sample_html(tokenizer, row))
    return "\n".join(parts)


def read_rows(file: Any, start: int, count: int) -> list[dict[str, Any]]:
    """Rows ``start`` to ``start + count`` of a Parquet file, reading only the row groups
    that hold them (a large split is never loaded whole for one page)."""
    rows: list[dict[str, Any]] = []
    offset = 0
    for group in range(file.num_row_groups):
        size = file.metadata.row_group(group).num_rows
        low, high = max(start - offset, 0), min(start + count - offset, size)
        if low < high:
            rows += file.read_row_group(group).slice(low, high - low).to_pylist()
        offset += size
        if offset >= start + count:
            break
    return rows


def _sample_html(tokenizer: Any, row: dict[str, Any]) -> str:
    ids, labels = row["input_ids"], row["labels"]
    trained = sum(1 for label in labels if label != IGNORE)
    spans = []
    for is_trained, piece in token_segments(ids, labels):
        text = html.escape(tokenizer.decode(piece, skip_special_tokens=False))
        css = "tf-trained" if is_trained else "tf-prompt"
        spans.append(f'<span class="{css}" title="{len(piece)} tokens">{text}</span>')
    return (
        f'<div class="tf-sample"><div class="tf-sample-head">{html.escape(str(row["id"]))} '
        f"&middot; {len(ids)} tokens, {trained} trained</div>"
        f'<pre class="tf-tokens">{"".join(spans)}</pre></div>'
    )


def token_segments(ids: list[int], labels: list[int]) -> list[tuple[bool, list[int]]]:
    """Runs of consecutive tokens that all carry loss, or all do not.

    >>> token_segments([5, 6, 7, 8], [-100, -100, 7, 8])
    [(False, [5, 6]), (True, [7, 8])]
    """
    segments: list[tuple[bool, list[int]]] = []
    for token, label in zip(ids, labels, strict=True):
        trained = label != IGNORE
        if segments and segments[-1][0] == trained:
            segments[-1][1].append(token)
        else:
            segments.append((trained, [token]))
    return segments


@lru_cache(maxsize=8)
def run_tokenizer(run_path: str) -> Any:
    """The tokenizer a run's data stage used: the tiny base's, the merged export's, or the
    config's model's (a local folder or a hub id)."""
    from tuneforge.models.load import load_tokenizer

    path = Path(run_path)
    for folder in (path / "base", path / "export" / "merged"):
        if (folder / "config.json").is_file():
            return load_tokenizer(str(folder))
    import yaml

    config = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) or {}
    model = config.get("model") or {}
    return load_tokenizer(model.get("name_or_path", ""), revision=model.get("revision"))


def quarantine_table(run: RunInfo) -> tuple[pd.DataFrame, int]:
    """The records the readers could not use (source, reason, raw text), and their count."""
    records = _jsonl(run.path / "data" / "quarantine.jsonl")
    rows = [
        {"source": r.get("source"), "reason": r.get("reason"), "raw": str(r.get("raw", ""))[:300]}
        for r in records[:TABLE_ROWS]
    ]
    return pd.DataFrame(rows, columns=list(QUARANTINE_COLUMNS)), len(records)


def dropped_table(run: RunInfo) -> tuple[pd.DataFrame, int]:
    """The records the cleaning steps dropped (source, step, reason, excerpt), and their count."""
    records = _jsonl(run.path / "data" / "dropped.jsonl")
    rows = [{key: r.get(key) for key in DROPPED_COLUMNS} for r in records[:TABLE_ROWS]]
    return pd.DataFrame(rows, columns=list(DROPPED_COLUMNS)), len(records)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            value = json.loads(line)
            if isinstance(value, dict):
                found.append(value)
    return found


def _tokens_file(run: RunInfo, split: str) -> Path:
    file = run.path / "data" / "tokens" / f"{split}.parquet"
    if not file.is_file():
        raise FileNotFoundError(f"{run.label}: no prepared {split!r} split ({file})")
    return file


DATA_CSS = """
.tf-legend { margin: 0.3em 0 0.8em; font-size: 0.9em; }
.tf-sample { margin-bottom: 1em; border: 1px solid #d0d7de; border-radius: 6px; padding: 0.5em; }
.tf-sample-head { font-size: 0.85em; color: #57606a; margin-bottom: 0.3em; }
.tf-tokens { white-space: pre-wrap; word-break: break-word; margin: 0; font-size: 0.9em; }
.tf-trained { background: #c9f2d0; color: #0b3d14; }
.tf-prompt { background: #eef1f4; color: #3b4148; }
"""
