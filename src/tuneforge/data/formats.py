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
  {"messages"}, "preferred_output", "non_preferred_output"}``. A numeric
  ``margin`` (how much better the chosen reply is) is kept in ``meta["margin"]``.
- ``ranked``: a prompt (``prompt`` as text or messages, ``messages``, sharegpt
  ``conversations`` or alpaca ``instruction``) and ``responses``: strings, best
  first, or objects ``{"content"|"text": ..., "rank": int}`` (1 is best; ties
  allowed); an optional ``ranking`` of 0-based indices into ``responses``, best
  first, decides the order when present. The record expands into one preference
  sample per (best response, lower-ranked response) pair, with ids
  ``<record id>#1``, ``#2``, ...; :func:`to_samples` returns them all.
- ``unpaired``: a chat record (any of the forms above) plus a boolean ``label``.
- ``text``: a ``text`` field.
- ``oasst`` (OpenAssistant trees), ``dolly`` (databricks-dolly-15k) and
  ``labelstudio`` (tasks of a Label Studio export): see
  :mod:`tuneforge.data.formats_wild` and :mod:`tuneforge.data.labelstudio`.

Tool definitions are normalised to OpenAI's ``{"type": "function", "function":
{...}}``. Text is kept verbatim, placeholders such as ``{{name}}`` included.
Columns a format does not use are ignored. Structured fields (``messages``,
``conversations``, ``history``, ``tools``, ...) may arrive as JSON text, as
they do in CSV cells and in sharegpt's ``tools``; they are parsed. ``None``
values count as absent, since columnar files fill missing keys with nulls.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import json
import math
from collections.abc import Callable
from typing import Any, get_args

from tuneforge.config.schema import DataConfig
from tuneforge.data.formats_wild import detect_wild, dolly_sample, oasst_samples
from tuneforge.data.labelstudio import task_sample
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

# The names data.format accepts: one list, kept in the config schema.
FORMATS = get_args(DataConfig.model_fields["format"].annotation)
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
    "margin",
    "responses",
    "ranking",
    "label",
    "text",
    "context",
    "response",
    "category",
    "annotations",
)
# Fields whose value is a list or object; a string there is JSON text to parse.
STRUCTURED = {
    "messages",
    "conversations",
    "history",
    "tools",
    "preferred_output",
    "non_preferred_output",
    "responses",
    "ranking",
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

    Raises:
        BadRecord: the record cannot become a Sample.
        DataError: the record is a ranked one that expands to several samples
            (read those with :func:`to_samples`).
    """
    samples = to_samples(record, source, fmt, system_prompt, mapping)
    if len(samples) != 1:
        raise DataError(
            f"{source}: the record gives {len(samples)} samples; read it with to_samples"
        )
    return samples[0]


def to_samples(
    record: Any,
    source: str,
    fmt: str = "auto",
    system_prompt: str | None = None,
    mapping: dict[str, str] | None = None,
) -> list[Sample]:
    """Convert one parsed record to its Samples (one, or several for a ranked record).

    Arguments are those of :func:`to_sample`. Every sample keeps ``source``; a ranked
    record's samples get the ids ``<record id>#1``, ``#2``, ... in pair order. A
    record's ``meta`` object (provenance of teacher-written or chunked data) is kept in
    each sample's ``meta``.

    Raises:
        BadRecord: the record cannot become a Sample.
    """
    if not isinstance(record, dict):
        raise BadRecord(f"expected a JSON object, got {type(record).__name__}")
    if mapping:
        record = apply_mapping(record, mapping)
    record = {key: value for key, value in record.items() if value is not None}
    fmt = detect_format(record) if fmt == "auto" else check_format(fmt)
    record_id = str(record.get("id") or source)
    if fmt == "ranked":
        samples = _ranked(record, system_prompt)
        ids = [f"{record_id}#{k}" for k in range(1, len(samples) + 1)]
    elif fmt in EXPANDING:  # these converters name each sample by a suffix of the record id
        samples = EXPANDING[fmt](record, system_prompt)
        ids = [record_id + sample.id for sample in samples]
    else:
        samples, ids = [CONVERTERS[fmt](record, system_prompt)], [record_id]
    given = record.get("meta") if isinstance(record.get("meta"), dict) else {}
    for sample, sample_id in zip(samples, ids, strict=True):
        sample.source, sample.id = source, sample_id
        sample.meta = {**given, **sample.meta}  # what the format derives wins
    return samples


def detect_format(record: dict[str, Any]) -> str:
    """The format of one record, judged by its keys."""
    if "preferred_output" in record or ("chosen" in record and "rejected" in record):
        return "preference"
    if "responses" in record:
        return "ranked"
    if wild := detect_wild(record):
        return wild
    form = _chat_form(record)
    if form and "label" in record:
        return "unpaired"
    if form:
        return form
    if "text" in record:
        return "text"
    raise BadRecord(
        f"unknown format: keys {sorted(record)[:6]}; expected messages, conversations, "
        "instruction, chosen/rejected, responses, label or text (rename columns with a "
        "field mapping)"
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
        meta=_margin(record),
    )


def _margin(record: dict[str, Any]) -> dict[str, float]:
    """``{"margin": value}`` for a record with a numeric ``margin`` (CSV text too), else ``{}``."""
    value = record.get("margin")
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRecord(f"'margin' must be a finite number, got {repr(value)[:40]}")
    return {"margin": float(value)}


def _preference_prompt(
    record: dict[str, Any],
    system_prompt: str | None,
    chosen: list[Message],
    rejected: list[Message],
) -> tuple[list[Message], list[Message], list[Message]]:
    """The prompt of a chosen/rejected record, and the replies with any shared turns removed."""
    prompt = given_prompt(record, system_prompt)
    if prompt is not None:
        return prompt, chosen, rejected
    # TRL's implicit prompt: both replies repeat the conversation that leads to them.
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == 0:
        raise BadRecord("no prompt: give 'prompt', 'messages' or 'conversations'")
    return chosen[:shared], chosen[shared:], rejected[shared:]


def given_prompt(record: dict[str, Any], system_prompt: str | None) -> list[Message] | None:
    """The prompt a record states (conversations, messages, prompt or instruction), or None."""
    if "conversations" in record:
        turns = sharegpt_messages(_structured(record, "conversations"), "conversations")
        return with_system(record.get("system"), turns)
    if "messages" in record:
        return openai_messages(_structured(record, "messages"), "messages")
    if "prompt" in record:
        return _text_or_messages(record["prompt"], "prompt", "user")
    if "instruction" in record:
        return alpaca_prompt(record, system_prompt)
    return None


def _ranked(record: dict[str, Any], system_prompt: str | None) -> list[Sample]:
    """The preference samples of a ranked record: each best response vs each lower-ranked one."""
    prompt = given_prompt(record, system_prompt)
    if prompt is None:
        raise BadRecord("no prompt: give 'prompt', 'messages', 'conversations' or 'instruction'")
    replies, ranks = _ranked_responses(record)
    best = min(ranks)
    top = [i for i, rank in enumerate(ranks) if rank == best]
    lower = sorted((i for i, rank in enumerate(ranks) if rank != best), key=lambda i: ranks[i])
    if not lower:
        raise BadRecord(
            f"a ranked record needs responses of at least two different ranks; got "
            f"{len(ranks)} response(s) ranked {sorted(set(ranks))}"
        )
    tools = _tools(record)
    return [
        Sample(
            id="",
            kind="preference",
            source="",
            messages=copy.deepcopy(prompt),
            chosen=copy.deepcopy(replies[t]),
            rejected=copy.deepcopy(replies[r]),
            tools=copy.deepcopy(tools),
        )
        for t in top
        for r in lower
    ]


def _ranked_responses(record: dict[str, Any]) -> tuple[list[list[Message]], list[int]]:
    """Each response as assistant messages, and its rank (1 is best)."""
    responses = _structured(record, "responses")
    if not isinstance(responses, list) or not responses:
        raise BadRecord("'responses' must be a non-empty list")
    replies = [_ranked_reply(item, f"responses[{i}]") for i, item in enumerate(responses)]
    if "ranking" in record:
        return replies, _ranks_from_ranking(_structured(record, "ranking"), len(replies))
    if all(isinstance(item, str) for item in responses):
        return replies, list(range(1, len(replies) + 1))
    return replies, [_rank(item, f"responses[{i}]") for i, item in enumerate(responses)]


def _ranked_reply(item: Any, where: str) -> list[Message]:
    """A response: text, or an object whose ``content`` (or ``text``) is text or messages."""
    if isinstance(item, dict):
        item = item["content"] if "content" in item else item.get("text")
        if item is None:
            raise BadRecord(f"{where} has no 'content' or 'text'")
    if isinstance(item, str):
        if not item.strip():
            raise BadRecord(f"{where} is empty")
        return [{"role": "assistant", "content": item}]
    if not isinstance(item, list):
        raise BadRecord(f"{where} must be text or an object with 'content' and 'rank'")
    reply = _reply(item, where)
    require_assistant(reply, f"{where} has no assistant turn")
    return reply


def _rank(item: Any, where: str) -> int:
    rank = item.get("rank") if isinstance(item, dict) else None
    if isinstance(rank, float) and rank.is_integer():
        rank = int(rank)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise BadRecord(
            f"{where} needs an integer 'rank' of 1 or more (1 is best), got {repr(rank)[:20]}; "
            "rank every response, list them best first as text, or give a 'ranking'"
        )
    return rank


def _ranks_from_ranking(ranking: Any, count: int) -> list[int]:
    """Ranks from ``ranking``, the indices of ``responses`` best first (each exactly once)."""
    valid = (
        isinstance(ranking, list)
        and all(type(i) is int for i in ranking)
        and sorted(ranking) == list(range(count))
    )
    if not valid:
        raise BadRecord(
            f"'ranking' must list each index of 'responses' (0 to {count - 1}) once, best "
            f"first; got {repr(ranking)[:60]}"
        )
    ranks = [0] * count
    for position, index in enumerate(ranking, 1):
        ranks[index] = position
    return ranks


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
    "dolly": dolly_sample,
    "labelstudio": task_sample,
}
# Formats whose record gives several samples; the converter names each by an id suffix.
EXPANDING: dict[str, Callable[[dict[str, Any], str | None], list[Sample]]] = {
    "oasst": oasst_samples,
}
