"""Reward models: one scalar per sequence, read at its last real token.

A reward model is the base model with a one-output score head
(``AutoModelForSequenceClassification``, ``num_labels=1``). Transformers pools
the head's output at the last token that is not the pad token, which is wrong
when the pad token is the end-of-sequence token the replies end with (common:
tuneforge pads with EOS when a tokenizer has no pad token). The score here is
taken at the last position the attention mask marks instead, through a hook on
the head, so it is right for any padding.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from tuneforge.data.jsonl import json_lines
from tuneforge.data.render import render_chat_batch
from tuneforge.errors import DataError, ModelError
from tuneforge.models.load import load_model, load_tokenizer
from tuneforge.train.batching import collate


def score_module(model: Any) -> torch.nn.Module:
    """The score head (PEFT wraps it; the wrapper returns the trained copy's output)."""
    found = [m for name, m in model.named_modules() if name == "score" or name.endswith(".score")]
    if not found:
        raise ModelError(f"{type(model).__name__} has no score head: not a reward model")
    return found[0]


def reward_scores(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """``[batch]`` scores, each read at the sequence's last attended (right-padded) token."""
    captured: list[torch.Tensor] = []
    hook = score_module(model).register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        model(input_ids=input_ids, attention_mask=attention_mask)
    finally:
        hook.remove()
    per_token = captured[-1].squeeze(-1)  # [batch, seq] (prompt tuning: virtual tokens first)
    last = attention_mask.sum(-1) - 1 + (per_token.shape[1] - input_ids.shape[1])
    return per_token[torch.arange(per_token.shape[0], device=per_token.device), last].float()


class RewardModel:
    """A trained reward model that scores conversations (prompt messages + a reply).

    Args:
        folder: A merged reward-model export (``export/merged``) or any folder holding a
            sequence-classification model with a one-output head, in safetensors.
        device: Where it runs.
        batch_size: Conversations scored together.
        max_length: Cut each rendered conversation to this many tokens.
        dtype: Weight dtype (the policy's, during RL).
    """

    def __init__(
        self,
        folder: str | Path,
        device: torch.device | str = "cpu",
        batch_size: int = 16,
        max_length: int | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.tokenizer = load_tokenizer(str(folder))
        self.model = load_model(
            str(folder),
            device=device,
            dtype=dtype,
            head="score",
            pad_token_id=self.tokenizer.pad_token_id,
        )
        if getattr(self.model.config, "num_labels", 1) != 1:
            raise ModelError(f"reward model {str(folder)!r}: its head has more than one output")
        self.model.eval().requires_grad_(False)
        self.device = torch.device(device)
        self.batch_size, self.max_length = batch_size, max_length

    def score(self, conversations: list[list[dict[str, Any]]]) -> list[float]:
        """One score per conversation, rendered through the model's own chat template."""
        return score_conversations(
            self.model, self.tokenizer, conversations, self.batch_size, self.max_length
        )


@torch.no_grad()
def score_conversations(
    model: Any,
    tokenizer: Any,
    conversations: list[list[dict[str, Any]]],
    batch_size: int = 16,
    max_length: int | None = None,
) -> list[float]:
    """Scores of a reward model (plain or PEFT) for conversations ending in the scored reply."""
    dev = next(model.parameters()).device
    scores: list[float] = []
    for start in range(0, len(conversations), batch_size):
        chunk = conversations[start : start + batch_size]
        rendered = render_chat_batch(tokenizer, [(c, None) for c in chunk], max_length=max_length)
        ids = [r.input_ids for r in rendered]
        batch = collate(ids, ids, tokenizer.pad_token_id)
        mask = batch["attention_mask"].to(dev)
        scores.extend(reward_scores(model, batch["input_ids"].to(dev), mask).tolist())
    return scores


def read_scoring_file(path: str | Path) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """``(id, conversation)`` per line of a JSONL file to score.

    A line holds ``messages`` (the last one the reply), or ``prompt`` (text or
    messages) with ``response`` (text).

    Raises:
        DataError: a line is not JSON or has neither form; names the file and line.
    """
    with open(path, encoding="utf-8") as handle:
        for where, record in json_lines(handle, str(path)):
            found = record.get("id", where) if isinstance(record, dict) else where
            yield str(found), _conversation(record, where)


def _conversation(record: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(record, dict) and isinstance(record.get("messages"), list):
        return record["messages"]
    if isinstance(record, dict) and "prompt" in record and isinstance(record.get("response"), str):
        prompt = record["prompt"]
        turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        if not isinstance(turns, list):
            raise DataError(f"{where}: 'prompt' must be text or a list of messages")
        return [*turns, {"role": "assistant", "content": record["response"]}]
    raise DataError(f"{where}: needs 'messages', or 'prompt' and 'response' (text)")
