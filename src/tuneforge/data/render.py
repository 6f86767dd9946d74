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
in every ``train_on`` mode. :func:`render_chat_batch` renders every text of a
batch first and tokenizes all their pieces in one call, which the Rust tokenizer
spreads over the cores; :func:`render_chat` is that function on a batch of one, as
:func:`render_prompt` is of :func:`render_prompt_batch`.

Text is tokenized without special tokens: a BOS comes from the template alone,
so it is never doubled (the fallback templates emit one exactly when the
tokenizer would add one itself).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from jinja2.exceptions import TemplateError
from transformers import PreTrainedTokenizerBase

from tuneforge.data.sample import Message
from tuneforge.data.templates import fallback_template, fallback_template_name
from tuneforge.errors import DataError
from tuneforge.train.loss import IGNORE_INDEX

TrainOn = Literal["assistant", "last_assistant", "all"]
Tools = list[dict[str, Any]] | None
Conversation = tuple[list[Message], Tools]  # messages and the tools offered with them
TRAIN_ON: tuple[str, ...] = ("assistant", "last_assistant", "all")


@dataclass
class Rendered:
    """Token ids and labels of one conversation (labels are IGNORE_INDEX where untrained)."""

    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        return len(self.labels) - self.labels.count(IGNORE_INDEX)


@dataclass(frozen=True)
class _Turn:
    """Character span of one assistant turn (reply plus its end-of-turn token)."""

    start: int
    end: int
    weight: int


@dataclass(frozen=True)
class _Layout:
    """A rendered conversation: its text, assistant turns, and the pieces it is tokenized in."""

    text: str
    turns: list[_Turn]
    pieces: list[tuple[int, int]]


def render_chat(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[Message],
    *,
    max_length: int | None = None,
    train_on: TrainOn = "assistant",
    tools: Tools = None,
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
    (rendered,) = render_chat_batch(
        tokenizer, [(messages, tools)], max_length=max_length, train_on=train_on, template=template
    )
    return rendered


def render_chat_batch(
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Conversation],
    *,
    max_length: int | None = None,
    train_on: TrainOn = "assistant",
    template: str | None = None,
) -> list[Rendered]:
    """Render many conversations at once; each result equals :func:`render_chat`'s.

    Every text is rendered first and all of them are tokenized in one batch call, which
    the Rust tokenizer spreads over the cores.

    Args:
        tokenizer: The model's tokenizer.
        conversations: ``(messages, tools)`` pairs; ``tools`` may be ``None``.
        max_length: Cut each token sequence to this length.
        train_on: As for :func:`render_chat`.
        template: As for :func:`render_chat`.

    Returns:
        One :class:`Rendered` per conversation, in order.

    Raises:
        DataError: as for :func:`render_chat`, for the first conversation that fails.
    """
    if train_on not in TRAIN_ON:
        raise DataError(f"train_on {train_on!r} is unknown; choose one of {', '.join(TRAIN_ON)}")
    chat = _ChatTemplate(tokenizer, template)
    layouts = [
        _layout(chat, messages, tools, generation_prompt=False) for messages, tools in conversations
    ]
    encoded = _encode_pieces(tokenizer, layouts)
    return [
        _labelled(layout, pieces, _trained_spans(layout, train_on), max_length)
        for layout, pieces in zip(layouts, encoded, strict=True)
    ]


def render_text(
    tokenizer: PreTrainedTokenizerBase, text: str, max_length: int | None = None
) -> list[Rendered]:
    """Raw text for continued pre-training: every token trained, cut into ``max_length`` rows.

    The text gets the BOS the tokenizer would add itself (never two) and an EOS,
    so the model learns where documents end; rows after the first start mid-text,
    as in pre-training. Rows shorter than two tokens carry no loss and are left out.
    """
    ids = _encode(tokenizer, [text])[0]
    if _facts(tokenizer).adds_bos:
        ids = [tokenizer.bos_token_id, *ids]
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    size = max_length or len(ids) or 1
    rows = [ids[start : start + size] for start in range(0, len(ids), size)]
    return [Rendered(row, list(row)) for row in rows if len(row) >= 2]


def render_prompt(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[Message],
    *,
    tools: Tools = None,
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
    (ids,) = render_prompt_batch(tokenizer, [(messages, tools)], template)
    return ids


def render_prompt_batch(
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Conversation],
    template: str | None = None,
) -> list[list[int]]:
    """Render many prompts at once; each result equals :func:`render_prompt`'s.

    Args:
        tokenizer: The model's tokenizer.
        conversations: ``(messages, tools)`` pairs, the conversation so far; ``tools``
            may be ``None``.
        template: A fallback template name, as for :func:`render_chat`.

    Returns:
        The prompt's token ids per conversation, in order (empty for no messages).
    """
    chat = _ChatTemplate(tokenizer, template)
    layouts = [
        _layout(chat, messages, tools, generation_prompt=True) for messages, tools in conversations
    ]
    encoded = _encode_pieces(tokenizer, layouts)
    return [list(itertools.chain.from_iterable(pieces)) for pieces in encoded]


def prompt_messages(messages: list[Message]) -> tuple[list[Message], str]:
    """Split a conversation into (prompt messages, the final assistant reply)."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last], messages[last]["content"]


def _layout(
    chat: _ChatTemplate, messages: list[Message], tools: Tools, *, generation_prompt: bool
) -> _Layout:
    """The rendered text, the character span of every assistant turn, and the pieces."""
    messages = [_template_message(m) for m in messages]
    text = chat.render(messages, tools, generation_prompt)
    turns: list[_Turn] = []
    for index, message in enumerate(messages):
        # An opening assistant turn answers nothing, and templates refuse to render the
        # empty conversation that would be its prompt.
        if message["role"] != "assistant" or index == 0:
            continue
        start_text = chat.render(messages[:index], tools, True)
        whole = index == len(messages) - 1 and not generation_prompt
        end_text = text if whole else chat.render(messages[: index + 1], tools, False)
        if not (end_text.startswith(start_text) and text.startswith(end_text)):
            raise DataError(
                "chat template is not prefix-stable (rendering a conversation's first turns "
                "does not give a prefix of the whole); choose a fallback template"
            )
        weight = 0 if message.get("weight") == 0 else 1
        turns.append(_Turn(len(start_text), len(end_text.rstrip()), weight))
    cuts = sorted({0, len(text), *(t.start for t in turns), *(t.end for t in turns)})
    pieces = [(lo, hi) for lo, hi in itertools.pairwise(cuts) if hi > lo]
    return _Layout(text, turns, pieces)


def _trained_spans(layout: _Layout, train_on: str) -> list[tuple[int, int]]:
    """Character ranges that carry loss, by mode; weight-0 turns are excluded in every mode."""
    turns = layout.turns[-1:] if train_on == "last_assistant" else layout.turns
    if train_on != "all":
        return [(t.start, t.end) for t in turns if t.weight]
    spans, position = [], 0
    for turn in turns:
        if not turn.weight:
            spans.append((position, turn.start))
            position = turn.end
    spans.append((position, len(layout.text)))
    return spans


def _encode_pieces(
    tokenizer: PreTrainedTokenizerBase, layouts: list[_Layout]
) -> list[list[list[int]]]:
    """The token ids of every piece of every layout, from one batch call."""
    texts = [layout.text[lo:hi] for layout in layouts for lo, hi in layout.pieces]
    ids = iter(_encode(tokenizer, texts))
    return [[next(ids) for _ in layout.pieces] for layout in layouts]


def _encode(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    """Token ids of each text without special tokens, as ``tokenizer(texts)`` gives them."""
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not _backend_is_plain(tokenizer, backend):
        # The tokenizer's own call sets the backend up (no truncation or padding) first.
        return tokenizer(texts, add_special_tokens=False)["input_ids"]
    # Offsets are not needed (pieces are cut at span boundaries), so skip computing them.
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    return [encoding.ids for encoding in encode(texts, add_special_tokens=False)]


def _backend_is_plain(tokenizer: PreTrainedTokenizerBase, backend: Any) -> bool:
    """Whether the Rust tokenizer would encode exactly as a plain ``tokenizer(texts)`` call."""
    split_special = getattr(tokenizer, "split_special_tokens", False)
    return (
        backend.truncation is None
        and backend.padding is None
        and backend.encode_special_tokens == split_special
    )


def _labelled(
    layout: _Layout,
    pieces: list[list[int]],
    trained: list[tuple[int, int]],
    max_length: int | None,
) -> Rendered:
    """Join the pieces' ids; label those of pieces inside ``trained``, the rest IGNORE_INDEX."""
    ids: list[int] = []
    labels: list[int] = []
    for (lo, hi), piece_ids in zip(layout.pieces, pieces, strict=True):
        ids += piece_ids
        if any(start <= lo and hi <= end for start, end in trained):
            labels += piece_ids
        else:
            labels += [IGNORE_INDEX] * len(piece_ids)
        if max_length is not None and len(ids) >= max_length:
            return Rendered(input_ids=ids[:max_length], labels=labels[:max_length])
    return Rendered(input_ids=ids, labels=labels)


class _ChatTemplate:
    """The template conversations are rendered with: the model's own or a fallback."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, name: str | None) -> None:
        self.tokenizer = tokenizer
        self.source: str | None = None
        self.kwargs: dict[str, Any] = {}
        if name is None and tokenizer.chat_template is None:
            name = _facts(tokenizer).fallback
        if name is not None:
            self.source = fallback_template(name)
            self.kwargs["add_bos"] = _facts(tokenizer).adds_bos

    def render(self, messages: list[Message], tools: Tools, add_generation_prompt: bool) -> str:
        if not messages:
            return ""
        try:
            return self.tokenizer.apply_chat_template(
                messages,
                tools=tools or None,
                chat_template=self.source,
                tokenize=False,
                add_generation_prompt=add_generation_prompt,
                **self.kwargs,
            )
        except TemplateError as err:
            raise DataError(f"the chat template rejected the conversation: {err}") from None


@dataclass(frozen=True)
class _TokenizerFacts:
    """What a fallback template needs to know about a tokenizer."""

    adds_bos: bool
    fallback: str


# Finding these takes a tokenizer call and the whole vocabulary, too slow to repeat per
# sample; a tokenizer's vocabulary and post-processor do not change once it renders.
_FACTS: weakref.WeakKeyDictionary[PreTrainedTokenizerBase, _TokenizerFacts] = (
    weakref.WeakKeyDictionary()
)


def _facts(tokenizer: PreTrainedTokenizerBase) -> _TokenizerFacts:
    facts = _FACTS.get(tokenizer)
    if facts is None:
        facts = _TokenizerFacts(_tokenizer_adds_bos(tokenizer), fallback_template_name(tokenizer))
        _FACTS[tokenizer] = facts
    return facts


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
