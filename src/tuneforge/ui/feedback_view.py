"""The Feedback tab: rank the replies of a ``tuneforge feedback sample`` file in the page.

Each record of the labelling file shows its prompt and its K replies; the labeller
gives each reply a rank (1 is best, ties allowed) and the ranks are written back
into the file at once, atomically, so closing the page loses nothing. "Make pairs"
runs :func:`tuneforge.data.feedback.labelled_pairs`, exactly as
``tuneforge feedback pairs`` does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tuneforge.data.feedback import labelled_pairs
from tuneforge.errors import DataError

MAX_REPLIES = 8  # reply slots on the page; a record with more is refused with its line


def load_records(path: Path) -> list[dict[str, Any]]:
    """The records of a labelling file.

    Raises:
        DataError: a line is not JSON, has no ``responses`` list, or too many replies
            (names the file and line).
    """
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: not JSON ({err.msg})") from None
        replies = record.get("responses") if isinstance(record, dict) else None
        if not isinstance(replies, list) or not replies:
            raise DataError(f"{path}:{number}: no 'responses' list to rank")
        if len(replies) > MAX_REPLIES:
            raise DataError(
                f"{path}:{number}: {len(replies)} replies; the page ranks at most {MAX_REPLIES}"
            )
        records.append(record)
    if not records:
        raise DataError(f"{path}: no records to rank")
    return records


def prompt_markdown(record: dict[str, Any]) -> str:
    """The record's prompt as markdown, one block per message."""
    prompt = record.get("prompt")
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    parts = [f"**{m.get('role', '?')}**: {m.get('content', '')}" for m in prompt or []]
    return "\n\n".join(parts) or "_(no prompt)_"


def reply_texts(record: dict[str, Any]) -> list[str]:
    """Each reply's text (``content`` or ``text``, or the reply itself when a string)."""
    texts = []
    for reply in record["responses"]:
        if isinstance(reply, dict):
            texts.append(str(reply.get("content", reply.get("text", ""))))
        else:
            texts.append(str(reply))
    return texts


def current_ranks(record: dict[str, Any]) -> list[int | None]:
    """Each reply's rank so far (None where not ranked)."""
    if isinstance(record.get("ranking"), list):
        ranks: list[int | None] = [None] * len(record["responses"])
        for position, index in enumerate(record["ranking"], 1):
            if isinstance(index, int) and 0 <= index < len(ranks):
                ranks[index] = position
        return ranks
    return [r.get("rank") if isinstance(r, dict) else None for r in record["responses"]]


def set_ranks(path: Path, records: list[dict[str, Any]], index: int, ranks: list[Any]) -> str:
    """Store the ranks of record ``index`` and rewrite the file; returns a status line.

    Ranks must be whole numbers from 1 (best); a reply left blank stays unranked.

    Raises:
        DataError: a rank is not a whole number of at least 1 (names the reply).
    """
    record = records[index]
    cleaned: list[int | None] = []
    for position, rank in enumerate(ranks[: len(record["responses"])], 1):
        if rank is None or rank == "":
            cleaned.append(None)
            continue
        if float(rank) != int(float(rank)) or int(float(rank)) < 1:
            raise DataError(f"reply {position}: rank {rank!r} must be a whole number from 1")
        cleaned.append(int(float(rank)))
    record.pop("ranking", None)
    record["responses"] = [
        {**(r if isinstance(r, dict) else {"content": str(r)}), "rank": rank}
        for r, rank in zip(record["responses"], cleaned, strict=True)
    ]
    _write_atomically(path, records)
    done = sum(1 for r in records if all(x is not None for x in current_ranks(r)))
    return f"saved record {index + 1}: {done} of {len(records)} records fully ranked"


def make_pairs(path: Path, out: Path) -> str:
    """Preference pairs from the ranked file; a one-line account of what was used."""
    books = labelled_pairs(path, out)
    reasons = "; ".join(f"{n} x {why}" for why, n in books["reasons"].items())
    line = f"{books['pairs']} pairs from {books['records']} records -> {out}"
    if books["unlabelled"]:
        line += f"; {books['unlabelled']} not usable ({reasons})"
    return line


def _write_atomically(path: Path, records: list[dict[str, Any]]) -> None:
    scratch = path.with_name(f".{path.name}.saving")
    with open(scratch, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(scratch, path)
