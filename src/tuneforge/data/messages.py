"""Normalise conversations to OpenAI-schema messages.

OpenAI messages are validated (roles, text content, tool calls, ``weight``
0/1); sharegpt turns are translated, including function_call turns (assistant
``tool_calls``) and observation turns (``tool`` messages answering the oldest
unanswered call by id); tool definitions are put in OpenAI's form. Anything
that cannot be normalised raises :class:`BadRecord` with the reason.
"""

from __future__ import annotations

import json
from typing import Any

from tuneforge.data.sample import ROLES, Message

SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "function_call": "assistant",
    "observation": "tool",
}


class BadRecord(ValueError):
    """A record that cannot be converted; its message is the quarantine reason."""


def openai_messages(value: Any, key: str) -> list[Message]:
    """Validate and normalise a list of OpenAI-schema messages."""
    if not isinstance(value, list) or not value:
        raise BadRecord(f"'{key}' must be a non-empty list")
    messages = [_openai_message(message, f"{key}[{i}]") for i, message in enumerate(value)]
    _fill_call_ids(messages)
    return messages


def _openai_message(message: Any, where: str) -> Message:
    if not isinstance(message, dict):
        raise BadRecord(f"{where} is not an object")
    role = message.get("role")
    if role not in ROLES:
        raise BadRecord(f"{where}.role {role!r} is not one of {', '.join(ROLES)}")
    out: Message = {"role": role, "content": _content(message.get("content"), where)}
    calls = message.get("tool_calls") or []
    if calls and role != "assistant":
        raise BadRecord(
            f"{where}.tool_calls on a {role} message; only assistant messages call tools"
        )
    if not isinstance(calls, list):
        raise BadRecord(f"{where}.tool_calls must be a list")
    if calls:
        out["tool_calls"] = [_tool_call(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(calls)]
    elif out["content"] is None:
        raise BadRecord(f"{where}.content must be a string")
    for key in ("name", "tool_call_id"):
        if message.get(key) is not None:
            if not isinstance(message[key], str):
                raise BadRecord(f"{where}.{key} must be a string")
            out[key] = message[key]
    weight = message.get("weight")
    if weight is not None:
        if type(weight) is not int or weight not in (0, 1):
            raise BadRecord(f"{where}.weight must be 0 or 1, got {weight!r}")
        out["weight"] = weight
    return out


def _content(content: Any, where: str) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRecord(f"{where}.content must be a string")
    parts = []
    for index, part in enumerate(content):
        if isinstance(part, dict) and part.get("type", "text") == "text":
            text = part.get("text")
        else:
            text = part if isinstance(part, str) else None
        if not isinstance(text, str):
            raise BadRecord(f"{where}.content[{index}] is not a text part; only text is supported")
        parts.append(text)
    return "".join(parts)


def _tool_call(call: Any, where: str) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not function.get("name"):
        raise BadRecord(f"{where}.function.name is missing")
    if call.get("type", "function") != "function":
        raise BadRecord(f"{where}.type {call['type']!r} is not 'function'")
    out: dict[str, Any] = {"type": "function", "function": tool_function(function, where)}
    return {"id": str(call["id"]), **out} if call.get("id") is not None else out


def tool_function(call: dict[str, Any], where: str) -> dict[str, str]:
    """OpenAI's ``{"name", "arguments"}`` of a call; arguments become the JSON text OpenAI wants."""
    name, arguments = call.get("name"), call.get("arguments", {})
    if not isinstance(name, str) or not name:
        raise BadRecord(f"{where}: the function name must be a non-empty string")
    if isinstance(arguments, dict):
        arguments = json.dumps(arguments, ensure_ascii=False)
    if not isinstance(arguments, str):
        raise BadRecord(f"{where}: function arguments must be an object or a JSON string")
    return {"name": name, "arguments": arguments}


def _fill_call_ids(messages: list[Message]) -> None:
    """Give tool calls without an id one (``call_N``), since tool messages answer by id."""
    used = {c["id"] for m in messages for c in m.get("tool_calls", []) if "id" in c}
    fresh = (f"call_{n}" for n in range(1, 1 << 30) if f"call_{n}" not in used)
    for message in messages:
        if "tool_calls" in message:
            message["tool_calls"] = [
                {"id": call.get("id") or next(fresh), **call} for call in message["tool_calls"]
            ]


def sharegpt_messages(turns: Any, key: str) -> list[Message]:
    """Convert sharegpt turns to OpenAI messages, tool calls and tool results included."""
    if not isinstance(turns, list) or not turns:
        raise BadRecord(f"'{key}' must be a non-empty list")
    messages: list[Message] = []
    pending: list[str] = []  # ids of calls not yet answered by an observation
    calls_made = 0
    for index, turn in enumerate(turns):
        where = f"{key}[{index}]"
        if not isinstance(turn, dict):
            raise BadRecord(f"{where} is not an object")
        speaker = turn["from"] if "from" in turn else turn.get("role")
        value = turn["value"] if "value" in turn else turn.get("content")
        if not isinstance(speaker, str) or speaker not in SHAREGPT_ROLES:
            raise BadRecord(f"{where}.from {speaker!r} is not one of {', '.join(SHAREGPT_ROLES)}")
        if not isinstance(value, str):
            raise BadRecord(f"{where}.value must be a string")
        if speaker == "function_call":
            calls = _sharegpt_calls(value, where, calls_made)
            calls_made += len(calls)
            pending += [call["id"] for call in calls]
            messages.append({"role": "assistant", "content": None, "tool_calls": calls})
        elif speaker == "observation":
            if not pending:
                raise BadRecord(f"{where}: observation without a function_call before it")
            messages.append({"role": "tool", "content": value, "tool_call_id": pending.pop(0)})
        else:
            messages.append({"role": SHAREGPT_ROLES[speaker], "content": value})
    return messages


def _sharegpt_calls(value: str, where: str, calls_made: int) -> list[dict[str, Any]]:
    """The OpenAI tool calls of a function_call turn: one call object or a list of them."""
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as err:
        raise BadRecord(f"{where}: function_call value is not valid JSON ({err.msg})") from None
    calls = parsed if isinstance(parsed, list) else [parsed]
    if not calls or not all(isinstance(call, dict) for call in calls):
        raise BadRecord(f"{where}: function_call must be an object with 'name' and 'arguments'")
    return [
        {"id": f"call_{calls_made + n}", "type": "function", "function": tool_function(call, where)}
        for n, call in enumerate(calls, 1)
    ]


def with_system(system: Any, messages: list[Message]) -> list[Message]:
    """The conversation with a system message first, unless none is given or one is there."""
    if system is None or system == "" or messages[0]["role"] == "system":
        return messages
    if not isinstance(system, str):
        raise BadRecord("'system' must be a string")
    return [{"role": "system", "content": system}, *messages]


def require_assistant(messages: list[Message], reason: str) -> None:
    """Raise BadRecord(reason) unless an assistant turn says something or calls a tool."""
    if not any(
        m["role"] == "assistant" and (m["content"] or m.get("tool_calls")) for m in messages
    ):
        raise BadRecord(reason)


def openai_tools(tools: Any) -> list[dict[str, Any]] | None:
    """Tool definitions in OpenAI form (bare function definitions are wrapped), or None if none."""
    if not tools:
        return None
    if not isinstance(tools, list):
        raise BadRecord("'tools' must be a list of tool definitions")
    out = []
    for index, tool in enumerate(tools):
        is_openai = isinstance(tool, dict) and tool.get("type") == "function" and "function" in tool
        function = tool["function"] if is_openai else tool
        if not (isinstance(function, dict) and isinstance(function.get("name"), str)):
            raise BadRecord(f"tools[{index}] must be a function definition with a 'name'")
        out.append({"type": "function", "function": function})
    return out
