"""Structured replies: JSON values (fenced or bare) and tool calls found in generated text."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

_FENCE = re.compile(r"^```[\w-]*[ \t]*\n?(.*?)\n?```$", re.DOTALL)
_TOOL_TAG = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_JSON_OPEN = re.compile(r"[\[{]")
UNPARSED = object()


def parse_json(text: str) -> Any:
    """The JSON value in ``text`` (whitespace and a ```json fence allowed), else ``UNPARSED``."""
    text = text.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return UNPARSED


def json_values(text: str) -> list[Any]:
    """The JSON value ``text`` is, or else every JSON object or array embedded in it."""
    value = parse_json(text)
    if value is not UNPARSED:
        return [value]
    decoder, values, pos = json.JSONDecoder(), [], 0
    while match := _JSON_OPEN.search(text, pos):
        try:
            value, pos = decoder.raw_decode(text, match.start())
            values.append(value)
        except json.JSONDecodeError:
            pos = match.start() + 1
    return values


def calls_in(value: Any) -> list[dict]:
    """Tool calls in a parsed JSON value: a call, a list of calls, or OpenAI-style wrappers."""
    if isinstance(value, list):
        return [call for item in value for call in calls_in(item)]
    if not isinstance(value, dict):
        return []
    if isinstance(value.get("tool_calls"), list):
        return calls_in(value["tool_calls"])
    if isinstance(value.get("function"), dict):
        value = value["function"]
    if not isinstance(value.get("name"), str):
        return []
    arguments = value.get("arguments", value.get("parameters"))
    if isinstance(arguments, str):
        parsed = parse_json(arguments) if arguments.strip() else {}
        arguments = arguments if parsed is UNPARSED else parsed
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        # Kept so the name still counts; this never equals a reference's argument dict.
        arguments = {"_unparsed": arguments}
    return [{"name": value["name"], "arguments": arguments}]


def parse_tool_calls(text: str) -> list[dict]:
    """Tool calls in generated text, as ``[{"name": str, "arguments": dict}]``.

    Finds JSON objects with ``name`` and ``arguments`` (or ``parameters``; a dict or a
    JSON string), inside ``<tool_call>...</tool_call>`` tags when there are any, else
    anywhere in the text; lists of calls, ``{"type": "function", "function": {...}}``
    and ``{"tool_calls": [...]}`` are unwrapped.
    """
    chunks = _TOOL_TAG.findall(text) or [text]
    return [call for chunk in chunks for value in json_values(chunk) for call in calls_in(value)]


def same_calls(predicted: list[dict], reference: list[dict]) -> bool:
    """Whether two call lists are equal as multisets (order ignored)."""
    remaining = list(predicted)
    for call in reference:
        if call not in remaining:
            return False
        remaining.remove(call)
    return not remaining


def same_names(predicted: list[dict], reference: list[dict]) -> bool:
    return Counter(c["name"] for c in predicted) == Counter(c["name"] for c in reference)
