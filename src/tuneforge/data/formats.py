"""Convert one parsed record, in any supported format, into a Sample.

The format is detected per record unless one is named:

- ``openai``: ``messages`` in the OpenAI schema; content may be a list of text
  parts (joined), assistant messages may carry ``tool_calls`` (arguments given
  as an object are serialised to the JSON string OpenAI expects), any message
  may carry ``weight`` 0/1, ``name`` or ``tool_call_id``; optional ``tools``.
- ``sharegpt``: ``conversations`` of ``{"from", "value"}`` turns (``role`` /
  ``content`` keys are accepted too) with roles human/user, gpt/assistant,
  system, function_call (an assistant message with ``tool_calls``) and
  observation (a ``tool`` message answering the oldest unanswered call);
  optional ``system`` and ``tools`` (a list, or a JSON string of one).
- ``alpaca``: ``instruction`` / ``input`` / ``output``, optional ``system`` and
  ``history`` (a list of ``[user, assistant]`` pairs). ``prompt`` /
  ``completion`` records (TRL's form) are read as chat too.
- ``preference``: ``chosen`` and ``rejected`` replies (plain text, one message,
  or a list of messages) after a prompt given as ``prompt`` (text or messages),
  ``messages``, sharegpt ``conversations``, alpaca ``instruction``, or implicitly
  as the turns both replies share; or OpenAI's DPO record ``{"input":
  {"messages"}, "preferred_output", "non_preferred_output"}``.
- ``unpaired``: a chat record (any of the forms above) plus a boolean ``label``.
- ``text``: a ``text`` field.

Tool definitions are normalised to OpenAI's ``{"type": "function", "function":
{...}}``. Text is kept verbatim, placeholders such as ``{{name}}`` included.
Columns a format does not use are ignored. Structured fields (``messages``,
``conversations``, ``history``, ``tools``, ...) may arrive as JSON text, as
they do in CSV cells and in sharegpt's ``tools``; they are parsed. ``None``
values count as absent, since columnar files fill missing keys with nulls.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from typing import Any

from tuneforge.data.messages import (
    BadRecord,
    openai_messages,
    openai_tools,
    require_assistant,
    sharegpt_messages,
    with_system,
)
from tuneforge.data.sample import Message, Sample
from tuneforge.errors import DataError

FORMATS = ("auto", "openai", "chat", "alpaca", "sharegpt", "preference", "unpaired", "text")
FIELDS = (
    "id",
    "instruction",
    "input",
    "output",
    "system",
    "history",
    "conversations",
    "messages",
    "tools",
    "prompt",
    "completion",
    "chosen",
    "rejected",
    "preferred_output",
    "non_preferred_output",
    "label",
    "text",
)
# Fields whose value is a list or object; a string there is JSON text to parse.
STRUCTURED = {
    "messages",
    "conversations",
    "history",
    "tools",
    "preferred_output",
    "non_preferred_output",
}


def check_format(fmt: str) -> str:
    """The canonical name of a format (``chat`` is ``openai``), or a DataError."""
    if fmt not in FORMATS:
        raise DataError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    return "openai" if fmt == "chat" else fmt


def check_mapping(mapping: dict[str, str] | None) -> dict[str, str]:
    """Validate a ``{our field: their column}`` mapping, naming a bad key and the closest field."""
    for ours in mapping or {}:
        if ours not in FIELDS:
            close = difflib.get_close_matches(ours, FIELDS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(FIELDS)}"
            raise DataError(f"field mapping {ours!r}: not a field tuneforge reads; {hint}")
    return dict(mapping or {})


def apply_mapping(record: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    """Rename the user's columns to our field names (swaps work: all renames read the original)."""
    present = {ours: theirs for ours, theirs in mapping.items() if theirs in record}
    out = {key: value for key, value in record.items() if key not in present.values()}
    out.update({ours: record[theirs] for ours, theirs in present.items()})
    return out


def to_sample(
    record: Any,
    source: str,
    fmt: str = "auto",
    system_prompt: str | None = None,
    mapping: dict[str, str] | None = None,
) -> Sample:
    """Convert one parsed record to a Sample, or raise BadRecord with the reason.

    Args:
        record: The parsed record (a dict for every valid format).
        source: ``file:line`` of the record; also its id unless it has an ``id``.
        fmt: A name from :data:`FORMATS`; ``auto`` detects the format per record.
        system_prompt: System message for alpaca records that carry none.
        mapping: ``{our field: their column}`` renames applied first.
    """
    if not isinstance(record, dict):
        raise BadRecord(f"expected a JSON object, got {type(record).__name__}")
    if mapping:
        record = apply_mapping(record, mapping)
    record = {key: value for key, value in record.items() if value is not None}
    fmt = detect_format(record) if fmt == "auto" else check_format(fmt)
    sample = CONVERTERS[fmt](record, system_prompt)
    sample.source = source
    sample.id = str(record.get("id") or source)
    return sample


def detect_format(record: dict[str, Any]) -> str:
    """The format of one record, judged by its keys."""
    if "preferred_output" in record or ("chosen" in record and "rejected" in record):
        return "preference"
    form = _chat_form(record)
    if form and "label" in record:
        return "unpaired"
    if form:
        return form
    if "text" in record:
        return "text"
    raise BadRecord(
        f"unknown format: keys {sorted(record)[:6]}; expected messages, conversations, "
        "instruction, chosen/rejected, label or text (rename columns with a field mapping)"
    )


def _chat_form(record: dict[str, Any]) -> str | None:
    for key, form in (
        ("messages", "openai"),
        ("conversations", "sharegpt"),
        ("instruction", "alpaca"),
        ("completion", "alpaca"),
    ):
        if key in record:
            return form
    return None


def _chat_sample(form: str) -> Callable[[dict[str, Any], str | None], Sample]:
    def convert(record: dict[str, Any], system_prompt: str | None) -> Sample:
        messages = chat_messages(record, form, system_prompt)
        require_assistant(messages, "no assistant turn")
        return Sample(id="", kind="chat", source="", messages=messages, tools=_tools(record))

    return convert


def chat_messages(record: dict[str, Any], form: str, system_prompt: str | None) -> list[Message]:
    """The conversation of a chat record in the given form (openai, sharegpt or alpaca)."""
    if form == "openai":
        return openai_messages(_structured(record, "messages"), "messages")
    if form == "sharegpt":
        messages = sharegpt_messages(_structured(record, "conversations"), "conversations")
        return with_system(record.get("system"), messages)
    if "instruction" not in record and "completion" in record:
        return _text_or_messages(record.get("prompt"), "prompt", "user") + _text_or_messages(
            record["completion"], "completion", "assistant"
        )
    output = record.get("output")
    if not isinstance(output, str):
        raise BadRecord("missing field 'output'" if output is None else "'output' must be a string")
    return [*alpaca_prompt(record, system_prompt), {"role": "assistant", "content": output}]


def alpaca_prompt(record: dict[str, Any], system_prompt: str | None) -> list[Message]:
    """System, history and user turns of an alpaca record (everything but the output)."""
    if "instruction" not in record:
        raise BadRecord("missing field 'instruction'")
    instruction, extra = record["instruction"], record.get("input", "")
    if not (isinstance(instruction, str) and isinstance(extra, str)):
        raise BadRecord("alpaca instruction/input must be strings")
    if not instruction.strip():
        raise BadRecord("empty instruction")
    history = _structured(record, "history", required=False) or []
    if not isinstance(history, list):
        raise BadRecord("'history' must be a list of [user, assistant] pairs")
    turns: list[Message] = []
    for index, pair in enumerate(history):
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(t, str) for t in pair)
        ):
            raise BadRecord(f"history[{index}] must be a [user, assistant] pair of strings")
        turns += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    turns.append({"role": "user", "content": prompt})
    return with_system(record.get("system") or system_prompt, turns)


def _tools(record: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The record's tool definitions in OpenAI form, or None when it offers none."""
    return openai_tools(_structured(record, "tools", required=False))


def _preference(record: dict[str, Any], system_prompt: str | None) -> Sample:
    if "preferred_output" in record:
        given = _structured(record, "input")
        if not isinstance(given, dict):
            raise BadRecord("'input' must be an object with 'messages'")
        prompt = openai_messages(_structured(given, "messages"), "input.messages")
        chosen = openai_messages(_structured(record, "preferred_output"), "preferred_output")
        rejected = openai_messages(
            _structured(record, "non_preferred_output"), "non_preferred_output"
        )
        tools = _tools(given)
    else:
        chosen, rejected = (_reply(record.get(key), key) for key in ("chosen", "rejected"))
        prompt, chosen, rejected = _preference_prompt(record, system_prompt, chosen, rejected)
        tools = _tools(record)
    for name, reply in (("chosen", chosen), ("rejected", rejected)):
        require_assistant(reply, f"'{name}' has no assistant turn")
    return Sample(
        id="",
        kind="preference",
        source="",
        messages=prompt,
        chosen=chosen,
        rejected=rejected,
        tools=tools,
    )


def _preference_prompt(
    record: dict[str, Any],
    system_prompt: str | None,
    chosen: list[Message],
    rejected: list[Message],
) -> tuple[list[Message], list[Message], list[Message]]:
    """The prompt of a chosen/rejected record, and the replies with any shared turns removed."""
    if "conversations" in record:
        turns = sharegpt_messages(_structured(record, "conversations"), "conversations")
        return with_system(record.get("system"), turns), chosen, rejected
    if "messages" in record:
        return openai_messages(_structured(record, "messages"), "messages"), chosen, rejected
    if "prompt" in record:
        return _text_or_messages(record["prompt"], "prompt", "user"), chosen, rejected
    if "instruction" in record:
        return alpaca_prompt(record, system_prompt), chosen, rejected
    # TRL's implicit prompt: both replies repeat the conversation that leads to them.
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == 0:
        raise BadRecord("no prompt: give 'prompt', 'messages' or 'conversations'")
    return chosen[:shared], chosen[shared:], rejected[shared:]


def _reply(value: Any, key: str) -> list[Message]:
    """A chosen/rejected reply: text, one message, or a list of (sharegpt or OpenAI) messages."""
    if value is None:
        raise BadRecord(f"missing field '{key}'")
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    turns = [value] if isinstance(value, dict) else value
    if isinstance(turns, list) and turns and isinstance(turns[0], dict) and "from" in turns[0]:
        return sharegpt_messages(turns, key)
    return openai_messages(turns, key)


def _text_or_messages(value: Any, key: str, role: str) -> list[Message]:
    if isinstance(value, str):
        if not value.strip():
            raise BadRecord(f"empty {key}")
        return [{"role": role, "content": value}]
    if value is None:
        raise BadRecord(f"missing field '{key}'")
    return openai_messages(value, key)


def _unpaired(record: dict[str, Any], system_prompt: str | None) -> Sample:
    form = _chat_form(record)
    if form is None:
        raise BadRecord("an unpaired record needs 'messages' or 'conversations' beside 'label'")
    label = record.get("label")
    if isinstance(label, str) and label.strip().lower() in ("true", "false"):
        label = label.strip().lower() == "true"  # CSV cells carry booleans as text
    if not isinstance(label, bool):
        shown = "missing" if label is None else repr(label)[:40]
        raise BadRecord(f"'label' must be true or false, got {shown}")
    messages = chat_messages(record, form, system_prompt)
    require_assistant(messages, "no assistant turn")
    return Sample(
        id="", kind="unpaired", source="", messages=messages, label=label, tools=_tools(record)
    )


def _text(record: dict[str, Any], system_prompt: str | None) -> Sample:
    text = record.get("text")
    if not isinstance(text, str):
        raise BadRecord("missing field 'text'" if text is None else "'text' must be a string")
    if not text.strip():
        raise BadRecord("empty text")
    return Sample(id="", kind="text", source="", text=text)


def _structured(record: dict[str, Any], key: str, required: bool = True) -> Any:
    """A field that holds a list or object, parsing it when it arrives as JSON text."""
    value = record.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise BadRecord(f"missing field '{key}'")
        return None
    if isinstance(value, str) and key in STRUCTURED:
        try:
            return json.loads(value)
        except json.JSONDecodeError as err:
            raise BadRecord(f"'{key}' is text but not valid JSON ({err.msg})") from None
    return value


CONVERTERS: dict[str, Callable[[dict[str, Any], str | None], Sample]] = {
    "openai": _chat_sample("openai"),
    "sharegpt": _chat_sample("sharegpt"),
    "alpaca": _chat_sample("alpaca"),
    "preference": _preference,
    "unpaired": _unpaired,
    "text": _text,
}
