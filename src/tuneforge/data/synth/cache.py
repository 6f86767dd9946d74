"""The teacher's answers on disk, keyed by the request: a re-run sends nothing it already has.

Each answer is committed the moment it arrives (SQLite, write-ahead log), so a run that
is killed loses only the requests in flight; the next run finds every other answer
here. The key is the sha256 of what decides an answer: model, messages, temperature,
top_p, max tokens and seed; the endpoint's URL is not part of it, so the same model
moved to another host keeps its cache.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.errors import DataError

SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    created REAL NOT NULL
)
"""


@dataclass(frozen=True)
class Answer:
    """One completion of the teacher and what it cost in tokens."""

    text: str
    prompt_tokens: int
    completion_tokens: int


def request_key(body: dict[str, Any]) -> str:
    """sha256 of a request body's deciding fields, as canonical JSON."""
    deciding = {
        k: body.get(k) for k in ("model", "messages", "temperature", "top_p", "max_tokens", "seed")
    }
    canonical = json.dumps(deciding, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class AnswerCache:
    """Answers by request key in one SQLite file (made on first use)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(SCHEMA)

    def get(self, key: str) -> Answer | None:
        """The stored answer to a request, or None."""
        row = self._db.execute(
            "SELECT text, prompt_tokens, completion_tokens FROM answers WHERE key = ?", (key,)
        ).fetchone()
        return Answer(*row) if row else None

    def put(self, key: str, model: str, answer: Answer) -> None:
        """Store an answer now (committed before this returns)."""
        self._db.execute(
            "INSERT OR REPLACE INTO answers (key, model, text, prompt_tokens, "
            "completion_tokens, created) VALUES (?, ?, ?, ?, ?, ?)",
            (key, model, answer.text, answer.prompt_tokens, answer.completion_tokens, time.time()),
        )

    def load(self, path: Path) -> int:
        """Add the answers of an answer file (:meth:`dump`'s JSONL); returns how many were new.

        An answer already cached for the same request is kept.

        Raises:
            DataError: a line that is not an answer, named by file and line.
        """
        added = 0
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                key, model, answer = _answer_line(line, f"{path}:{number}")
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO answers (key, model, text, prompt_tokens, "
                    "completion_tokens, created) VALUES (?, ?, ?, ?, ?, ?)",
                    (key, model, answer.text, answer.prompt_tokens, answer.completion_tokens, 0.0),
                )
                added += cursor.rowcount
        return added

    def model_of(self, key: str) -> str | None:
        """The model that wrote the cached answer to a request, or None."""
        row = self._db.execute("SELECT model FROM answers WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        self._db.close()


def answer_line(key: str, model: str, answer: Answer, **about: Any) -> str:
    """One line of an answer file; ``about`` (task, source id) is there for people to read."""
    record = {
        "key": key,
        "model": model,
        **about,
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "text": answer.text,
    }
    return json.dumps(record, ensure_ascii=False) + "\n"


def _answer_line(line: str, where: str) -> tuple[str, str, Answer]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(
            f"{where}: not JSON ({err.msg}); an answer file has one answer per line"
        ) from None
    if not isinstance(record, dict):
        raise DataError(f"{where}: an answer is a JSON object, got {type(record).__name__}")
    for name, kind in (("key", str), ("model", str), ("text", str)):
        if not isinstance(record.get(name), kind):
            raise DataError(f"{where}: key {name!r} missing or not a string")
    if len(record["key"]) != 64:
        raise DataError(f"{where}: key {record['key'][:80]!r} is not a request key (64 hex digits)")
    tokens = [record.get(name, 0) for name in ("prompt_tokens", "completion_tokens")]
    if not all(isinstance(t, int) and t >= 0 for t in tokens):
        raise DataError(f"{where}: prompt_tokens and completion_tokens must be whole numbers")
    return record["key"], record["model"], Answer(record["text"], *tokens)
