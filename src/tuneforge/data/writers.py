"""Write Samples as OpenAI fine-tuning JSONL, and quarantined and dropped records beside them.

One JSON object per line, by kind:

- chat: ``{"messages": [...], "tools": [...]}`` (tools only when offered), OpenAI's
  supervised format, with ``tool_calls``, ``tool_call_id`` and ``weight`` kept.
- preference: ``{"input": {"messages": prompt, "tools": [...]}, "preferred_output":
  chosen, "non_preferred_output": rejected}``, OpenAI's DPO format.
- unpaired: ``{"messages": [...], "label": true|false}`` (OpenAI has no unpaired
  format; this is the KTO record the readers take back).
- text: ``{"text": ...}``.

The readers read every one of these back into an equal Sample (``id`` and
``source`` aside, as those name the new file).
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from tuneforge.data.readers import Quarantined
from tuneforge.data.sample import Message, Sample

DROPPED_EXCERPT_CHARS = 300


def openai_record(sample: Sample) -> dict[str, Any]:
    """The OpenAI fine-tuning JSONL record of a sample of any kind."""
    if sample.kind == "text":
        return {"text": sample.text}
    if sample.kind == "preference":
        given: dict[str, Any] = {"messages": _messages(sample.messages)}
        if sample.tools:
            given["tools"] = sample.tools
        return {
            "input": given,
            "preferred_output": _messages(sample.chosen),
            "non_preferred_output": _messages(sample.rejected),
        }
    record: dict[str, Any] = {"messages": _messages(sample.messages)}
    if sample.kind == "unpaired":
        record["label"] = sample.label
    if sample.tools:
        record["tools"] = sample.tools
    return record


def _messages(messages: list[Message]) -> list[Message]:
    # OpenAI's examples leave content out of a pure tool-call turn rather than writing null.
    return [
        {key: value for key, value in m.items() if not (key == "content" and value is None)}
        for m in messages
    ]


def write_openai_jsonl(samples: Iterable[Sample], path: str | Path) -> int:
    """Write samples as OpenAI fine-tuning JSONL (gzipped for a ``.gz`` name); return the count."""
    return write_jsonl((openai_record(sample) for sample in samples), path)


def write_quarantine(records: Iterable[Quarantined], path: str | Path) -> int:
    """Write quarantined records (source, reason, raw) as JSONL; return the count."""
    return write_jsonl((record.to_json() for record in records), path)


def dropped_record(step: str, sample: Sample, reason: str) -> dict[str, str]:
    """The ``dropped.jsonl`` line of a sample a step dropped.

    Args:
        step: The name of the step that dropped it.
        sample: The sample as the step saw it.
        reason: Why the step dropped it.

    Returns:
        ``id``, ``source`` (``file:line``), ``step``, ``reason`` and ``excerpt``: the
        first characters of the sample's content (a conversation's turns as
        ``role: content`` lines).
    """
    return {
        "id": sample.id,
        "source": sample.source,
        "step": step,
        "reason": reason,
        "excerpt": sample.content_key()[:DROPPED_EXCERPT_CHARS],
    }


def write_jsonl(records: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Write JSON lines atomically: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    count = 0
    try:
        with _open_for_writing(partial, gz=path.name.endswith(".gz")) as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)
    return count


def _open_for_writing(path: Path, gz: bool) -> IO[str]:
    if gz:
        return gzip.open(path, "wt", encoding="utf-8")
    return open(path, "w", encoding="utf-8")
