"""Group an OpenAssistant message table (one message per row) into message trees.

oasst1/oasst2 ship their messages flat (the Hugging Face Parquet files, the
``*.messages.jsonl.gz`` exports): each row a message with ``message_id``,
``parent_id`` and ``message_tree_id``. A conversation needs its ancestors,
which may be anywhere in the file, so the rows are grouped in one pass over the
whole table (in memory: oasst2's 135k messages are a few hundred MB at most)
and each group is nested into the tree record that ``format: oasst`` reads:
``{"id", "message_tree_id", "prompt": {..., "replies": [...]}}``. Replies keep
the table's order; the reader ranks them.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.data.formats import to_samples
from tuneforge.data.messages import BadRecord
from tuneforge.data.sample import Kind, Sample
from tuneforge.data.sources import dataset_files, iter_records
from tuneforge.errors import DataError

# Per-message keys that belong to the tree, not the node (the official tree exports leave them out).
TREE_KEYS = ("message_tree_id", "tree_state")


@dataclass
class MessageTable:
    """The trees of a message table, and the books of its rows.

    Attributes:
        trees: Tree records, in the order their first row appears.
        rows: Rows read.
        dropped: Rows not in any tree, by reason (unreadable, no ids, orphaned, ...).
        deleted: Rows of those trees marked deleted (kept; the reader skips them).
        failed_review: Rows of those trees whose review failed (kept; the reader skips them).
    """

    trees: list[dict[str, Any]] = field(default_factory=list)
    rows: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    deleted: int = 0
    failed_review: int = 0


def message_trees(path: Path, langs: list[str] | None = None) -> MessageTable:
    """Read a flat OpenAssistant message table and nest its rows into trees.

    Args:
        path: The table: any file or directory tuneforge reads (Parquet, JSONL, ...).
        langs: Keep only trees whose prompt is in one of these languages.

    Raises:
        DataError: the table holds no rows, or no row is an OpenAssistant message.
    """
    table = MessageTable()
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in _rows(path, table):
        groups[row["message_tree_id"]].append(row)
    for tree_id, rows in groups.items():
        try:
            tree = nest(tree_id, rows, table.dropped)
        except BadRecord as err:
            table.dropped[str(err)] += len(rows)
            continue
        lang = tree["prompt"].get("lang")
        if langs and lang not in langs:
            table.dropped[f"tree language {lang} not in --lang"] += len(rows)
            continue
        table.trees.append(tree)
        table.deleted += sum(row.get("deleted") is True for row in rows)
        table.failed_review += sum(row.get("review_result") is False for row in rows)
    if table.rows == 0:
        raise DataError(f"{path}: no rows in the message table")
    if not groups:
        raise DataError(
            f"{path}: no row is an OpenAssistant message (message_id, parent_id, "
            f"message_tree_id, role, text); {_top(table.dropped)}"
        )
    return table


def _rows(path: Path, table: MessageTable) -> Iterator[dict[str, Any]]:
    """The table's usable rows; the others are counted in ``table.dropped`` by reason."""
    for entry in dataset_files(path)[0]:
        for raw in iter_records(entry):
            table.rows += 1
            row = raw.value
            if isinstance(row, BadRecord) or not isinstance(row, dict):
                table.dropped["unreadable row"] += 1
                continue
            missing = [k for k in ("message_id", "message_tree_id") if not row.get(k)]
            if missing:
                table.dropped[f"row without {missing[0]}"] += 1
                continue
            # Parquet gives dates and other non-JSON values; the trees are written as JSON.
            yield json.loads(json.dumps(row, default=str))


def nest(tree_id: str, rows: list[dict[str, Any]], dropped: Counter[str]) -> dict[str, Any]:
    """The tree record of one tree's rows; rows not under its root count as orphaned.

    Raises:
        BadRecord: the rows have no root message (no row without a parent), or several.
    """
    roots = [row for row in rows if not row.get("parent_id")]
    if len(roots) != 1:
        raise BadRecord(f"tree with {len(roots)} root messages (rows without parent_id)")
    children: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row.get("parent_id"):
            children[str(row["parent_id"])].append(row)
    placed = 0

    def node(row: dict[str, Any]) -> dict[str, Any]:
        nonlocal placed
        placed += 1
        out = {key: value for key, value in row.items() if key not in TREE_KEYS}
        out["replies"] = [node(child) for child in children.pop(str(row["message_id"]), [])]
        return out

    prompt = node(roots[0])
    if placed < len(rows):
        dropped["orphaned (its parent is not in the table)"] += len(rows) - placed
    return {"id": tree_id, "message_tree_id": tree_id, "prompt": prompt}


def tree_samples(
    trees: list[dict[str, Any]], name: str, kind: Kind
) -> tuple[list[Sample], Counter[str]]:
    """The samples of one kind (chat or preference) the trees give, and why others give none.

    Args:
        trees: Tree records, as :func:`message_trees` makes them.
        name: The table's name, for each sample's source (``name:tree id``).
        kind: ``chat`` for the best paths, ``preference`` for the ranked pairs.
    """
    samples: list[Sample] = []
    unusable: Counter[str] = Counter()
    for tree in trees:
        try:
            found = to_samples(tree, f"{name}:{tree['id']}", "oasst")
        except BadRecord as err:
            unusable[str(err)] += 1
            continue
        samples += [sample for sample in found if sample.kind == kind]
    return samples, unusable


def _top(reasons: Counter[str]) -> str:
    return "; ".join(f"{n} x {why}" for why, n in reasons.most_common(3)) or "no rows"
