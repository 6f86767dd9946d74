"""The one rendering function: messages -> token ids and loss labels.

Training, evaluation and serving all build their token ids here, so a prompt
seen at inference is, token for token, the prefix the model was trained on.
Assistant spans are found by rendering growing prefixes of the conversation
through the model's own chat template, so any prefix-stable template works
without per-model rules; the end-of-turn token closing each assistant turn is
inside its span and therefore trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from tuneforge.data.sample import Message
from tuneforge.errors import DataError
from tuneforge.train.loss import IGNORE_INDEX


@dataclass
class Rendered:
    """Token ids and labels of one conversation (labels are IGNORE_INDEX where untrained)."""

    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def render_chat(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[Message],
    *,
    max_length: int | None = None,
) -> Rendered:
    """Render a conversation for training, with loss on assistant turns only.

    Args:
        tokenizer: A tokenizer with a chat template.
        messages: OpenAI-schema messages.
        max_length: Cut the token sequence to this length.

    Returns:
        The token ids and labels; labels cover each assistant reply and the
        end-of-turn token that closes it.
    """
    text = _template(tokenizer, messages, add_generation_prompt=False)
    spans: list[tuple[int, int]] = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start_text = _template(tokenizer, messages[:index], add_generation_prompt=True)
        end_text = _template(tokenizer, messages[: index + 1], add_generation_prompt=False)
        if not (end_text.startswith(start_text) and text.startswith(end_text)):
            raise DataError(
                "chat template is not prefix-stable (rendering a conversation's first turns "
                "does not give a prefix of the whole); set a fallback template"
            )
        spans.append((len(start_text), len(end_text.rstrip())))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = encoded["input_ids"]
    labels = [
        token if any(lo <= start < hi for lo, hi in spans) else IGNORE_INDEX
        for token, (start, _end) in zip(ids, encoded["offset_mapping"], strict=True)
    ]
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    return Rendered(input_ids=ids, labels=labels)


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[Message]) -> list[int]:
    """Token ids of the prompt that asks the model for the next assistant turn."""
    text = _template(tokenizer, messages, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def prompt_messages(messages: list[Message]) -> tuple[list[Message], str]:
    """Split a conversation into (prompt messages, the final assistant reply)."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last], messages[last]["content"]


def _template(
    tokenizer: PreTrainedTokenizerBase, messages: list[Message], *, add_generation_prompt: bool
) -> Any:
    if not messages:
        return ""
    if tokenizer.chat_template is None:
        raise DataError("the model's tokenizer has no chat template; choose a chat model")
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
