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

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        self._db.close()
