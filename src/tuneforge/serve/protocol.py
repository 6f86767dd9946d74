"""The OpenAI wire format: request bodies we accept and the JSON we answer with.

Unknown fields are ignored, as OpenAI's own clients send fields a server may not
know (``stream_options``, ``user``, ``logit_bias`` ...); known fields are
validated, and a bad value is a 400 in OpenAI's error shape naming the field.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tuneforge.serve.types import Generation

MAX_N = 8


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=MAX_N)
    seed: int | None = None
    stream: bool = False

    @field_validator("stop")
    @classmethod
    def _at_most_four(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > 4:
            raise ValueError("at most 4 stop sequences")
        return stop

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(s for s in self.stop if s)


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text", "json_object", "json_schema"] = "text"


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        """The content as text: a list of parts keeps its text parts, in order."""
        if isinstance(self.content, list):
            return "".join(p.get("text", "") for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatRequest(_Body):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None

    def limit(self, default: int) -> int:
        return self.max_completion_tokens or self.max_tokens or default

    def json_mode(self) -> bool:
        return self.response_format is not None and self.response_format.type != "text"

    def as_messages(self) -> list[dict[str, Any]]:
        """Messages in the shape the renderer takes (``developer`` is a system message)."""
        found = []
        for message in self.messages:
            role = "system" if message.role == "developer" else message.role
            item: dict[str, Any] = {"role": role, "content": message.text()}
            if message.tool_calls:
                item["tool_calls"] = message.tool_calls
            if message.tool_call_id:
                item["tool_call_id"] = message.tool_call_id
            found.append(item)
        return found


class CompletionRequest(_Body):
    prompt: str | list[str] | list[int] = Field(
        description="Text, a list of one text, or token ids (as vLLM takes them)."
    )
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for completions

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt: str | list[str] | list[int]) -> str | list[str] | list[int]:
        if isinstance(prompt, list) and not prompt:
            raise ValueError("the prompt is empty")
        if isinstance(prompt, list) and isinstance(prompt[0], str) and len(prompt) != 1:
            raise ValueError("send one prompt per request (a list of exactly one string)")
        return prompt

    def token_ids(self) -> list[int] | None:
        """The prompt's token ids when it was sent as ids."""
        if isinstance(self.prompt, list) and isinstance(self.prompt[0], int):
            return list(self.prompt)  # type: ignore[arg-type]
        return None

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else str(self.prompt[0])


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(generation: Generation) -> dict[str, int]:
    return {
        "prompt_tokens": generation.prompt_tokens,
        "completion_tokens": generation.completion_tokens,
        "total_tokens": generation.prompt_tokens + generation.completion_tokens,
    }


def chat_response(request_id: str, model: str, generation: Generation) -> dict[str, Any]:
    """A ``chat.completion`` object."""
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": choice.text},
                "finish_reason": _finish(choice.finish_reason),
                "logprobs": None,
            }
            for i, choice in enumerate(generation.choices)
        ],
        "usage": usage(generation),
    }


def chat_chunk(
    request_id: str, model: str, delta: dict[str, Any], finish: str | None = None
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` of a stream."""
    return {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "delta": delta, "finish_reason": _finish(finish), "logprobs": None}
        ],
    }


def completion_response(request_id: str, model: str, generation: Generation) -> dict[str, Any]:
    """A ``text_completion`` object."""
    return {
        "id": request_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [_completion_choice(i, c) for i, c in enumerate(generation.choices)],
        "usage": usage(generation),
    }


def completion_chunk(
    request_id: str, model: str, text: str, finish: str | None = None
) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": text, "finish_reason": _finish(finish), "logprobs": None}],
    }


def model_list(names: list[str], created: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "tuneforge"}
            for name in names
        ],
    }


ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
    504: "timeout_error",
}


def error_body(status: int, message: str, param: str | None = None, code: str | None = None):
    """OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``."""
    kind = ERROR_TYPES.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _finish(reason: str | None) -> str | None:
    # "cancelled" (timeout, disconnect) has no OpenAI name; "length" is the closest truth
    return "length" if reason == "cancelled" else reason


def _completion_choice(index: int, choice: Any) -> dict[str, Any]:
    finish = _finish(choice.finish_reason)
    return {"index": index, "text": choice.text, "finish_reason": finish, "logprobs": None}
