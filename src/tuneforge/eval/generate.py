"""Batched greedy generation from chat prompts built by the one rendering function."""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from tuneforge.console import progress
from tuneforge.data.render import render_prompt
from tuneforge.data.sample import Message


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[Message]],
    *,
    max_new_tokens: int,
    batch_size: int,
    label: str = "generate",
    tools: list[list[dict] | None] | None = None,
    template: str | None = None,
) -> list[str]:
    """Greedy replies to each prompt conversation, decoded without special tokens.

    ``tools`` (one list per prompt) and ``template`` are passed to the one rendering
    function, as they were when the training data was rendered.
    """
    model.eval()
    dev = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id
    eos = model.generation_config.eos_token_id or tokenizer.eos_token_id
    replies: list[str] = []
    with progress() as bar:
        task = bar.add_task(label, total=len(prompts), info="")
        for start in range(0, len(prompts), batch_size):
            encoded = [
                render_prompt(
                    tokenizer, prompts[i], tools=tools[i] if tools else None, template=template
                )
                for i in range(start, min(start + batch_size, len(prompts)))
            ]
            width = max(len(ids) for ids in encoded)
            # left padding keeps every prompt's last token at the same position
            ids = torch.tensor([[pad_id] * (width - len(e)) + e for e in encoded], device=dev)
            mask = torch.tensor(
                [[0] * (width - len(e)) + [1] * len(e) for e in encoded], device=dev
            )
            output = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=pad_id,
            )
            for row in output[:, width:]:
                replies.append(tokenizer.decode(row, skip_special_tokens=True).strip())
            bar.update(task, advance=len(encoded))
    return replies
