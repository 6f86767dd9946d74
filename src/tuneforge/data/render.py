"""The one rendering function: messages -> token ids and loss labels.

Training, evaluation and serving all build their token ids here, so a prompt
seen at inference is, token for token, the prefix the model was trained on.
Assistant spans are found by rendering growing prefixes of the conversation
through the chat template (the model's own, or a fallback from
:mod:`tuneforge.data.templates`), so any prefix-stable template works without
per-model rules; the end-of-turn token closing each assistant turn is inside
its span and therefore trained.

The text is tokenized in pieces cut at every assistant span boundary. At
inference the reply's tokens are generated after the prompt's, never merged
with them, so cutting there makes training see the same token boundary; it
also means no token straddles a span, and the labels cover exactly the span.
Cuts do not depend on which turns are trained, so ``input_ids`` are the same
in every ``train_on`` mode.

Text is tokenized without special tokens: a BOS comes from the template alone,
so it is never doubled (the fallback templates emit one exactly when the
tokenizer would add one itself).
"""

from __future__ import annotations

import contextlib
import itertools
import json
from dataclasses import dataclass
from typing import Any, Literal

from jinja2.exceptions import TemplateError
from transformers import PreTrainedTokenizerBase

from tuneforge.data.sample import Message
from tuneforge.data.templates import fallback_template, fallback_template_name
from tuneforge.errors import DataError
from tuneforge.train.loss import IGNORE_INDEX

TrainOn = Literal["assistant", "last_assistant", "all"]
TRAIN_ON: tuple[str, ...] = ("assistant", "last_assistant", "all")


@dataclass
class Rendered:
    """Token ids and labels of one conversation (labels are IGNORE_INDEX where untrained)."""

    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


@dataclass(frozen=True)
class _Turn:
    """Character span of one assistant turn (reply plus its end-of-turn token)."""

    start: int
    end: int
    weight: int


def render_chat(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[Message],
    *,
    max_length: int | None = None,
    train_on: TrainOn = "assistant",
    tools: list[dict[str, Any]] | None = None,
    template: str | None = None,
) -> Rendered:
    """Render a conversation for training, with loss labels.

    Args:
        tokenizer: The model's tokenizer.
        messages: OpenAI-schema messages; an assistant message with ``weight: 0`` is never
            trained, in any mode.
        max_length: Cut the token sequence to this length.
        train_on: ``assistant`` (every assistant turn), ``last_assistant`` (the final one
            only) or ``all`` (every token).
        tools: OpenAI tool definitions, passed to the template.
        template: A fallback template name (``chatml``, ``llama-3``, ``alpaca``) to use
            instead of the tokenizer's own; a tokenizer without one gets a fallback anyway.

    Returns:
        The token ids and labels; a trained assistant turn's labels cover its reply and
        the end-of-turn token that closes it. An assistant message that opens the
        conversation answers nothing and is never trained.

    Raises:
        DataError: an unknown ``train_on`` or template, a template that rejects the
            conversation, or one that is not prefix-stable.
    """
    if train_on not in TRAIN_ON:
        raise DataError(f"train_on {train_on!r} is unknown; choose one of {', '.join(TRAIN_ON)}")
    text, turns = _render_turns(tokenizer, messages, tools, template, generation_prompt=False)
    trained = _trained_spans(text, turns, train_on)
    ids, labels = _tokenize(tokenizer, text, turns, trained)
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    return Rendered(input_ids=ids, labels=labels)


def render_prompt(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[Message],
    *,
    tools: list[dict[str, Any]] | None = None,
    template: str | None = None,
) -> list[int]:
    """Token ids of the prompt that asks the model for the next assistant turn.

    Args:
        tokenizer: The model's tokenizer.
        messages: The conversation so far.
        tools: OpenAI tool definitions, passed to the template.
        template: A fallback template name, as for :func:`render_chat`.

    Returns:
        Exactly the ids :func:`render_chat` puts before that turn's reply.
    """
    text, turns = _render_turns(tokenizer, messages, tools, template, generation_prompt=True)
    ids, _ = _tokenize(tokenizer, text, turns, [])
    return ids


def prompt_messages(messages: list[Message]) -> tuple[list[Message], str]:
    """Split a conversation into (prompt messages, the final assistant reply)."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last], messages[last]["content"]


def _render_turns(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[Message],
    tools: list[dict[str, Any]] | None,
    template: str | None,
    *,
    generation_prompt: bool,
) -> tuple[str, list[_Turn]]:
    """The rendered text and the character span of every assistant turn in it."""
    chat = _ChatTemplate(tokenizer, template, tools)
    messages = [_template_message(m) for m in messages]
    text = chat.render(messages, generation_prompt)
    turns: list[_Turn] = []
    for index, message in enumerate(messages):
        # An opening assistant turn answers nothing, and templates refuse to render the
        # empty conversation that would be its prompt.
        if message["role"] != "assistant" or index == 0:
            continue
        start_text = chat.render(messages[:index], True)
        end_text = chat.render(messages[: index + 1], False)
        if not (end_text.startswith(start_text) and text.startswith(end_text)):
            raise DataError(
                "chat template is not prefix-stable (rendering a conversation's first turns "
                "does not give a prefix of the whole); choose a fallback template"
            )
        weight = 0 if message.get("weight") == 0 else 1
        turns.append(_Turn(len(start_text), len(end_text.rstrip()), weight))
    return text, turns


def _trained_spans(text: str, turns: list[_Turn], train_on: str) -> list[tuple[int, int]]:
    """Character ranges that carry loss, by mode; weight-0 turns are excluded in every mode."""
    if train_on == "last_assistant":
        turns = turns[-1:]
    if train_on != "all":
        return [(t.start, t.end) for t in turns if t.weight]
    spans, position = [], 0
    for turn in turns:
        if not turn.weight:
            spans.append((position, turn.start))
            position = turn.end
    spans.append((position, len(text)))
    return spans


def _tokenize(
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    turns: list[_Turn],
    trained: list[tuple[int, int]],
) -> tuple[list[int], list[int]]:
    """Tokenize ``text`` in pieces cut at turn boundaries; label the pieces inside ``trained``."""
    cuts = sorted({0, len(text), *(t.start for t in turns), *(t.end for t in turns)})
    pieces = [(lo, hi) for lo, hi in itertools.pairwise(cuts) if hi > lo]
    if not pieces:
        return [], []
    encoded = tokenizer([text[lo:hi] for lo, hi in pieces], add_special_tokens=False)
    ids: list[int] = []
    labels: list[int] = []
    for (lo, hi), piece_ids in zip(pieces, encoded["input_ids"], strict=True):
        ids.extend(piece_ids)
        if any(start <= lo and hi <= end for start, end in trained):
            labels.extend(piece_ids)
        else:
            labels.extend([IGNORE_INDEX] * len(piece_ids))
    return ids, labels


class _ChatTemplate:
    """The template a conversation is rendered with: the model's own or a fallback."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        name: str | None,
        tools: list[dict[str, Any]] | None,
    ) -> None:
        self.tokenizer = tokenizer
        self.tools = tools or None
        self.source: str | None = None
        self.kwargs: dict[str, Any] = {}
        if name is None and tokenizer.chat_template is None:
            name = fallback_template_name(tokenizer)
        if name is not None:
            self.source = fallback_template(name)
            self.kwargs["add_bos"] = _tokenizer_adds_bos(tokenizer)

    def render(self, messages: list[Message], add_generation_prompt: bool) -> str:
        if not messages:
            return ""
        try:
            return self.tokenizer.apply_chat_template(
                messages,
                tools=self.tools,
                chat_template=self.source,
                tokenize=False,
                add_generation_prompt=add_generation_prompt,
                **self.kwargs,
            )
        except TemplateError as err:
            raise DataError(f"the chat template rejected the conversation: {err}") from None


def _tokenizer_adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


def _template_message(message: Message) -> Message:
    """A copy in the shape chat templates expect: text content, tool arguments as mappings."""
    message = dict(message)
    content = message.get("content")
    if isinstance(content, list):
        # A text-only model sees the text parts of a multi-part message, in order.
        message["content"] = "".join(
            part.get("text", "") for part in content if isinstance(part, dict)
        )
    if message.get("tool_calls"):
        message["tool_calls"] = [_template_call(call) for call in message["tool_calls"]]
    return message


def _template_call(call: dict[str, Any]) -> dict[str, Any]:
    # OpenAI records carry arguments as a JSON string; templates apply `tojson` to a mapping,
    # so a string would be rendered quoted twice.
    function = call.get("function", call)
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        # A string that is not JSON is rendered as written: the data is shown, not repaired.
        with contextlib.suppress(json.JSONDecodeError):
            arguments = json.loads(arguments)
    function = {**function, "arguments": arguments}
    return {**call, "function": function} if "function" in call else function
