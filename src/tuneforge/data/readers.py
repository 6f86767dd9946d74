"""Read JSON / JSONL datasets in chat or alpaca form into Samples, quarantining bad records."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.data.sample import ROLES, Message, Sample
from tuneforge.errors import DataError


@dataclass
class Quarantined:
    """A record that could not become a Sample, with why and where."""

    source: str
    reason: str
    raw: str

    def to_json(self) -> dict[str, str]:
        return {"source": self.source, "reason": self.reason, "raw": self.raw[:2000]}


class BadRecord(ValueError):
    """A record that cannot be converted; its message is the quarantine reason."""


@dataclass
class ReadResult:
    """Samples and quarantined records of one file: ``read = len(samples) + len(quarantined)``."""

    path: Path
    samples: list[Sample] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)

    @property
    def read(self) -> int:
        return len(self.samples) + len(self.quarantined)


def read_dataset(
    path: str | Path, fmt: str = "auto", system_prompt: str | None = None, limit: int | None = None
) -> ReadResult:
    """Read a ``.json`` array or ``.jsonl`` file of chat or alpaca records.

    Args:
        path: The dataset file.
        fmt: ``auto`` (per record), ``chat`` or ``alpaca``.
        system_prompt: System message prepended to alpaca records.
        limit: Read at most this many records.

    Raises:
        DataError: the file is missing, unreadable as a whole, or empty.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data.path {str(path)!r}: file not found")
    result = ReadResult(path=path)
    for line_no, raw, record in _records(path):
        if limit is not None and result.read >= limit:
            break
        source = f"{path.name}:{line_no}"
        try:
            if isinstance(record, BadRecord):
                raise record
            result.samples.append(to_sample(record, source, fmt, system_prompt))
        except BadRecord as err:
            result.quarantined.append(Quarantined(source, str(err), raw))
    if result.read == 0:
        raise DataError(f"data.path {str(path)!r}: no records in the file")
    return result


def to_sample(record: Any, source: str, fmt: str, system_prompt: str | None) -> Sample:
    """Convert one parsed record to a chat Sample, or raise BadRecord with the reason."""
    if not isinstance(record, dict):
        raise BadRecord(f"expected a JSON object, got {type(record).__name__}")
    if fmt == "auto":
        fmt = "chat" if "messages" in record else "alpaca" if "instruction" in record else ""
        if not fmt:
            raise BadRecord(
                f"unknown format: keys {sorted(record)[:6]}; expected messages/instruction"
            )
    messages = _chat(record) if fmt == "chat" else _alpaca(record, system_prompt)
    if not any(m["role"] == "assistant" and m.get("content") for m in messages):
        raise BadRecord("no assistant turn")
    sample_id = str(record.get("id") or source)
    return Sample(id=sample_id, kind="chat", source=source, messages=messages)


def _chat(record: dict[str, Any]) -> list[Message]:
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRecord("'messages' must be a non-empty list")
    out: list[Message] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRecord(f"messages[{index}] is not an object")
        role = message.get("role")
        if role not in ROLES:
            raise BadRecord(f"messages[{index}].role {role!r} is not one of {', '.join(ROLES)}")
        content = message.get("content")
        if isinstance(content, list):  # OpenAI content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise BadRecord(f"messages[{index}].content must be a string")
        out.append({"role": role, "content": content})
    return out


def _alpaca(record: dict[str, Any], system_prompt: str | None) -> list[Message]:
    instruction, extra, output = (record.get(k, "") for k in ("instruction", "input", "output"))
    if not all(isinstance(v, str) for v in (instruction, extra, output)):
        raise BadRecord("alpaca instruction/input/output must be strings")
    if not instruction.strip():
        raise BadRecord("empty instruction")
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    system = record.get("system") or system_prompt
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]
    return messages


def _records(path: Path) -> Iterator[tuple[int, str, Any]]:
    """Yield (line number, raw text, parsed record or BadRecord) for JSONL or a JSON array."""
    data = path.read_bytes()
    if path.suffix == ".json":
        try:
            parsed = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(
                f"{path}: not valid JSON ({err}); use JSONL to skip bad records"
            ) from None
        if not isinstance(parsed, list):
            raise DataError(f"{path}: expected a JSON array of records")
        for index, record in enumerate(parsed, 1):
            yield index, json.dumps(record, ensure_ascii=False), record
        return
    for line_no, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            yield (
                line_no,
                line.decode("utf-8", "replace"),
                BadRecord(f"invalid UTF-8 ({err.reason})"),
            )
            continue
        try:
            yield line_no, text, json.loads(text)
        except json.JSONDecodeError as err:
            yield line_no, text, BadRecord(f"invalid JSON: {err.msg} at column {err.colno}")
