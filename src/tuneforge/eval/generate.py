"""Batched generation for evaluation, from prompts built by the one rendering function.

Prompts are rendered with :func:`tuneforge.data.render.render_prompt_batch`, so a reply
continues exactly the prefix that training saw. They are sorted by length, cut into
batches, left-padded (every prompt's last token in the same column; ``generate`` derives
position ids from the attention mask, so padding shifts no position) and decoded with the
KV cache. Replies come back in prompt order.

The :class:`Sampling` fields are the whole decoding spec: the processors a model's own
``generation_config`` may ship (a repetition penalty, say) are switched off, so base and
tuned models, and different models, are decoded alike.

Sampled generation gives every prompt its own random stream, seeded by ``(seed, the
prompt's position in the call)``: a reply does not depend on the batch size, on the
other prompts in its batch or on the sorting. Only the floating-point noise of batched
matrix products can differ between batch compositions, and it can flip a draw only when
a uniform number falls within that noise of a probability boundary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from tuneforge.console import progress
from tuneforge.data.render import render_prompt_batch
from tuneforge.data.sample import Message

# Processors a model's generation_config can switch on, set to their neutral values.
_NEUTRAL = {
    "num_beams": 1,
    "num_return_sequences": 1,
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "min_length": 0,
    "min_new_tokens": None,
    "bad_words_ids": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "sequence_bias": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "exponential_decay_length_penalty": None,
    "stop_strings": None,
    # Unused without do_sample; neutral so transformers does not warn that they are set.
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": 50,
    "min_p": None,
    "typical_p": 1.0,
}


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How replies are decoded.

    Attributes:
        max_new_tokens: Longest reply, in tokens.
        temperature: Softmax temperature; 0 decodes greedily (argmax).
        top_p: Nucleus sampling mass (1 keeps every token).
        top_k: Sample among the ``top_k`` likeliest tokens (0 keeps every token).
        stop: Stop strings: a reply is cut before the first occurrence of any of them, and
            its row stops generating once one appears.
        seed: Seed of sampled generation; the same seed gives the same replies.
    """

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be 0 (greedy) or more, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be 0 (off) or more, got {self.top_k}")
        if isinstance(self.stop, str) or not all(self.stop):
            raise ValueError(f"stop must be a tuple of non-empty strings, got {self.stop!r}")

    @property
    def greedy(self) -> bool:
        """Whether decoding is deterministic argmax."""
        return self.temperature == 0


def stop_ids(model: Any, tokenizer: Any) -> list[int]:
    """Token ids that end a completion: the model's generation EOS ids and the tokenizer's."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    ids = [i for i in [*ids, tokenizer.eos_token_id] if i is not None]
    return sorted(set(ids))


def left_pad(
    encoded: Sequence[Sequence[int]], pad_id: int, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids left-padded to the longest row, and the attention mask (0 on padding).

    Left padding puts every row's last prompt token in the last column, so the first
    generated token of every row lands in the same column.
    """
    width = max(len(row) for row in encoded)
    ids = [[pad_id] * (width - len(row)) + list(row) for row in encoded]
    mask = [[0] * (width - len(row)) + [1] * len(row) for row in encoded]
    return (
        torch.tensor(ids, dtype=torch.long, device=device),
        torch.tensor(mask, dtype=torch.long, device=device),
    )


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to (not including) the first occurrence of any stop string."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]


def generate(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[Message]],
    *,
    sampling: Sampling | None = None,
    max_new_tokens: int | None = None,
    batch_size: int = 16,
    label: str | None = "generate",
    tools: list[list[dict] | None] | None = None,
    template: str | None = None,
) -> list[str]:
    """Replies to prompt conversations, in prompt order.

    Args:
        model: A causal LM (plain or PEFT); in eval mode for the call, then restored.
        tokenizer: The model's tokenizer.
        prompts: Conversations so far, each asking for the next assistant turn.
        sampling: How to decode; greedy with 64 new tokens when omitted.
        max_new_tokens: Shorthand that overrides ``sampling.max_new_tokens``.
        batch_size: Prompts per ``model.generate`` call.
        label: Progress bar title; no bar when None.
        tools: One list of OpenAI tool definitions (or None) per prompt, passed to the
            chat template as when the training data was rendered.
        template: A fallback template name, as for the data stage.

    Returns:
        Each reply decoded without special tokens, cut before its first stop string and
        stripped of surrounding whitespace.
    """
    sampling = sampling or Sampling()
    if max_new_tokens is not None:
        sampling = dataclasses.replace(sampling, max_new_tokens=max_new_tokens)
    conversations = [(p, tools[i] if tools else None) for i, p in enumerate(prompts)]
    prompt_ids = render_prompt_batch(tokenizer, conversations, template)
    completions = generate_ids(
        model,
        prompt_ids,
        pad_id=pad_id(tokenizer),
        stop_ids=stop_ids(model, tokenizer),
        sampling=sampling,
        batch_size=batch_size,
        label=label,
        tokenizer=tokenizer,
    )
    texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
    return [cut_at_stop(text, sampling.stop).strip() for text in texts]


@torch.no_grad()
def generate_ids(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    *,
    pad_id: int,
    stop_ids: list[int],
    sampling: Sampling,
    batch_size: int,
    label: str | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> list[list[int]]:
    """Completions of token prompts, batched: the token-level core of :func:`generate`.

    Args:
        model: A causal LM (plain or PEFT); in eval mode for the call, then restored.
        prompt_ids: Prompt token ids (none may be empty).
        pad_id: Padding id (prompts are left-padded; it never reaches the model unmasked).
        stop_ids: Token ids that end a completion.
        sampling: How to decode.
        batch_size: Prompts per ``model.generate`` call.
        label: Progress bar title; no bar when None.
        tokenizer: Decodes completions to look for ``sampling.stop`` strings (needed only
            when there are some).

    Returns:
        Each prompt's completion without the prompt, in prompt order: cut after its first
        stop token, or after the token that completed a stop string.

    Raises:
        ValueError: an empty prompt, a batch size below 1, or stop strings without a
            tokenizer.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if sampling.stop and tokenizer is None:
        raise ValueError("stop strings need the tokenizer to decode completions")
    if empty := [i for i, ids in enumerate(prompt_ids) if not ids]:
        raise ValueError(f"prompt {empty[0]} renders to no tokens")
    # Longest first: less padding per batch, and the largest batch (the likeliest to run
    # out of memory) runs at once rather than at the end.
    order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))
    completions: list[list[int]] = [[] for _ in prompt_ids]
    was_training = model.training
    model.eval()
    try:
        with _progress(label, len(order)) as advance:
            for start in range(0, len(order), batch_size):
                keys = order[start : start + batch_size]
                batch = [prompt_ids[k] for k in keys]
                rows = _generate_batch(model, batch, keys, pad_id, stop_ids, sampling, tokenizer)
                for key, row in zip(keys, rows, strict=True):
                    completions[key] = row
                advance(len(keys), sum(map(len, rows)))
    finally:
        model.train(was_training)
    return completions


def _generate_batch(
    model: Any,
    prompts: list[Sequence[int]],
    keys: list[int],
    pad_id: int,
    stop: list[int],
    sampling: Sampling,
    tokenizer: PreTrainedTokenizerBase | None,
) -> list[list[int]]:
    """One ``model.generate`` call over a batch; ``keys`` are the prompts' positions."""
    device = next(model.parameters()).device
    ids, mask = left_pad(prompts, pad_id, device)
    width = ids.shape[1]
    processors = LogitsProcessorList()
    if not sampling.greedy:
        processors.append(_RowSampler(sampling, keys, device))
    stopping = StoppingCriteriaList()
    strings = _StopStrings(tokenizer, sampling.stop, width) if sampling.stop else None
    if strings is not None:
        stopping.append(strings)
    output = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=sampling.max_new_tokens,
        do_sample=False,  # sampled decoding draws in _RowSampler, one stream per prompt
        use_cache=True,
        eos_token_id=stop,
        pad_token_id=pad_id,
        logits_processor=processors,
        stopping_criteria=stopping,
        **_NEUTRAL,
    )
    rows = output[:, width:].tolist()
    limits = strings.lengths if strings is not None else {}
    return [_cut(row[: limits.get(j, len(row))], stop) for j, row in enumerate(rows)]


def _cut(row: list[int], stop: list[int]) -> list[int]:
    """``row`` up to and including its first stop token."""
    return next((row[: i + 1] for i, token in enumerate(row) if token in stop), row)


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The padding id; tokenizers without one pad with EOS (always masked out)."""
    pad = tokenizer.pad_token_id
    return tokenizer.eos_token_id if pad is None else pad


class _RowSampler(LogitsProcessor):
    """Samples each row from its own seeded stream, and leaves only that token to argmax.

    One ``torch.Generator`` per prompt, seeded by the call's seed and the prompt's
    position, makes a reply independent of the batch it is decoded in.
    """

    def __init__(self, sampling: Sampling, keys: list[int], device: torch.device) -> None:
        self.warpers = sampling_warpers(sampling)
        self.generators = [row_generator(sampling.seed, key, device) for key in keys]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        probs = self.warpers(input_ids, scores).float().softmax(dim=-1)
        picks = [
            torch.multinomial(p, 1, generator=g)
            for p, g in zip(probs, self.generators, strict=True)
        ]
        chosen = torch.full_like(scores, float("-inf"))
        return chosen.scatter_(1, torch.stack(picks), 0.0)


def sampling_warpers(sampling: Sampling) -> LogitsProcessorList:
    """Temperature, then top-k and top-p (where set): what turns logits into sampled scores."""
    warpers: list[LogitsProcessor] = [TemperatureLogitsWarper(sampling.temperature)]
    if sampling.top_k:
        warpers.append(TopKLogitsWarper(sampling.top_k))
    if sampling.top_p < 1:
        warpers.append(TopPLogitsWarper(sampling.top_p))
    return LogitsProcessorList(warpers)


def row_generator(seed: int, key: int, device: torch.device | str) -> torch.Generator:
    """The random stream of prompt (or choice) ``key`` of a call seeded ``seed``.

    The seed is hashed rather than packed into bits: the CPU generator keeps only a
    seed's low 32 bits.
    """
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest, "little"))


class _StopStrings(StoppingCriteria):
    """Stops a row once its decoded completion contains a stop string.

    Only the generated tokens are decoded, so a stop string never matches across the
    prompt boundary (transformers' ``stop_strings`` would), and decoding skips special
    tokens exactly as the reply's decoding does. ``lengths`` records, per row, how many
    tokens it had generated when its stop string appeared.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase | None, stop: Sequence[str], start: int
    ) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.start = start
        self.lengths: dict[int, int] = {}

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        generated = input_ids[:, self.start :]
        for row, ids in enumerate(generated.tolist()):
            if row not in self.lengths:
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                if any(s in text for s in self.stop):
                    self.lengths[row] = len(ids)
        done = [row in self.lengths for row in range(len(generated))]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


@contextlib.contextmanager
def _progress(label: str | None, total: int) -> Iterator[Any]:
    """A function ``advance(prompts, tokens)`` that moves the progress bar (none without label)."""
    if label is None:
        yield lambda prompts, tokens: None
        return
    started, generated = time.perf_counter(), 0
    with progress() as bar:
        task = bar.add_task(label, total=total, info="")

        def advance(prompts: int, tokens: int) -> None:
            nonlocal generated
            generated += tokens
            rate = generated / max(time.perf_counter() - started, 1e-9)
            bar.update(task, advance=prompts, info=f"{rate:,.0f} tok/s")

        yield advance
