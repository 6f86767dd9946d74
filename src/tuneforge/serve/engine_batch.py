"""The local engine's decode batch: rows of many requests, one KV cache, one token a step.

Continuous batching: rows join between decode steps and leave as soon as they finish or
are cancelled. Joining rows are prefilled together (left-padded, as in
:mod:`tuneforge.eval.generate`); their KV cache is then padded on the left to the
batch's width and stacked under the running rows' cache, with the padding masked out.
Every row's position ids are counted from its own attention mask, so padding shifts no
position, and every sampled row draws from its own seeded stream, so a row's tokens do
not depend on the rows it shares the batch with (up to the floating-point noise of
batched matrix products, as in eval).

Rows may use different LoRA adapters in one forward pass (PEFT's ``adapter_names``;
``"__base__"`` is the plain base model). This module is the only one in the server that
touches the internals of transformers' ``DynamicCache``; a model whose cache is not made
of plain full-attention layers (sliding windows, linear attention) cannot stack caches,
and rows then join only an empty batch (dynamic rather than continuous batching).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from transformers import DynamicCache, LogitsProcessorList
from transformers.cache_utils import DynamicLayer

from tuneforge.eval.generate import (
    Sampling,
    cut_at_stop,
    left_pad,
    row_generator,
    sampling_warpers,
)
from tuneforge.serve.types import FinishReason

BASE = "__base__"  # PEFT's adapter name for "no adapter" in a mixed batch
MIXED = "__mixed__"  # the adapter mode of a batch whose rows use different adapters
REPLACEMENT = "\ufffd"  # what decoding shows for the bytes of an unfinished character


@dataclass(eq=False)
class Row:
    """One choice being generated.

    Attributes:
        owner: What the engine ties the row to (its request).
        index: The choice's number in its request: the key of its sampling stream.
        prompt: Prompt token ids.
        adapter: Loaded adapter name, or None for the base model.
        sampling: How to decode (``max_new_tokens`` and ``stop`` included).
        tokens: Generated token ids, stop token included.
        text: The decoded completion so far, cut before a stop string.
        sent: How many characters of ``text`` were handed out as stream pieces.
        finish: Why the row ended; None while it runs.
    """

    owner: Any
    index: int
    prompt: Sequence[int]
    adapter: str | None
    sampling: Sampling
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0
    finish: FinishReason | None = None
    _warpers: LogitsProcessorList | None = None
    _generator: torch.Generator | None = None
    _stable: str = ""  # decoded text that no later token can change
    _window: int = 0  # first token of the decoding window
    _read: int = 0  # tokens up to here are in ``_stable``

    def start_sampling(self, device: torch.device) -> None:
        """Seed this row's stream by (request seed, choice index), as eval seeds prompts."""
        if not self.sampling.greedy:
            self._warpers = sampling_warpers(self.sampling)
            self._generator = row_generator(self.sampling.seed, self.index, device)

    def pick(self, logits: torch.Tensor, argmax: int) -> int:
        """The next token: ``argmax`` when greedy, else a draw from the row's ``logits``.

        Args:
            logits: The row's last-position logits, float32, shape ``[V]``.
            argmax: Their argmax (computed for the whole batch at once).
        """
        if self._generator is None:
            return argmax
        probs = self._warpers(None, logits[None]).softmax(dim=-1)[0]
        return int(torch.multinomial(probs, 1, generator=self._generator))

    def advance(self, token: int, tokenizer: Any, stop_ids: Sequence[int]) -> None:
        """Append ``token``, decode, and set ``finish`` on a stop id, stop string or length."""
        self.tokens.append(token)
        text = self._decode_new(tokenizer)
        self.text = cut_at_stop(text, self.sampling.stop)
        if len(self.text) < len(text) or token in stop_ids:
            self.finish = "stop"
        elif len(self.tokens) >= self.sampling.max_new_tokens:
            self.finish = "length"

    def _decode_new(self, tokenizer: Any) -> str:
        """The completion decoded so far, decoding only a window of recent tokens.

        The window starts one chunk back, and only the text it adds beyond that chunk's
        own decoding is new, so tokenizers that drop a leading space at the start of a
        decode (SentencePiece) decode as they would whole. The window moves on once it
        decodes to whole characters; until then its tail shows as U+FFFD.
        """
        seen = _decode(tokenizer, self.tokens[self._window : self._read])
        window = _decode(tokenizer, self.tokens[self._window :])
        if window.endswith(REPLACEMENT):
            return self._stable + window[len(seen) :]
        self._stable += window[len(seen) :]
        self._window, self._read = self._read, len(self.tokens)
        return self._stable

    def take_piece(self) -> str:
        """The text decoded since the last piece that can no longer change.

        Held back while the row runs: an unfinished character (decoded as U+FFFD) and a
        tail that could be the start of a stop string.
        """
        end = len(self.text)
        if self.finish is None:
            end = len(self.text.rstrip(REPLACEMENT))
            end -= _stop_prefix(self.text[:end], self.sampling.stop)
        piece = self.text[self.sent : end] if end > self.sent else ""
        self.sent = max(self.sent, end)
        return piece


def _decode(tokenizer: Any, tokens: list[int]) -> str:
    return tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def _stop_prefix(text: str, stop: Sequence[str]) -> int:
    """Length of the longest tail of ``text`` that is a proper prefix of a stop string."""
    longest = min(len(text), max((len(s) - 1 for s in stop), default=0))
    for size in range(longest, 0, -1):
        if any(s.startswith(text[-size:]) for s in stop):
            return size
    return 0


class DecodeBatch:
    """The running rows, their KV cache and attention mask, and the token each feeds next.

    Args:
        tokenizer: Decodes completions.
        stop_ids: Token ids that end a completion.
        pad_id: Left-padding id (always masked).
        device: Where inputs go.
    """

    def __init__(
        self, tokenizer: Any, *, stop_ids: Sequence[int], pad_id: int, device: torch.device
    ) -> None:
        self.tokenizer = tokenizer
        self.stop_ids = frozenset(stop_ids)
        self.pad_id = pad_id
        self.device = device
        self.rows: list[Row] = []
        self.cache: DynamicCache | None = None
        self.mask = torch.zeros(0, 0, dtype=torch.long, device=device)
        self.next_tokens = torch.zeros(0, dtype=torch.long, device=device)
        self.stackable = True  # learned from the first cache the model builds
        self.adapter_mode: str | None = None  # BASE, MIXED or the one active adapter

    @property
    def size(self) -> int:
        """Rows running."""
        return len(self.rows)

    def can_join(self) -> bool:
        """Whether new rows can join now: always when empty, else if caches stack."""
        return not self.rows or self.stackable

    def admit(self, model: Any, rows: list[Row]) -> None:
        """Prefill ``rows`` together, pick their first tokens and add them to the batch."""
        for row in rows:
            row.start_sampling(self.device)
        ids, mask = left_pad([row.prompt for row in rows], self.pad_id, self.device)
        cache = DynamicCache(config=_config(model))
        logits = self._forward(model, ids, mask, cache, rows)
        if not self.rows:
            self.cache, self.mask = cache, mask
            self.stackable = _stackable(cache)
        else:
            self.mask = _stack(self.cache, self.mask, cache, mask)
        self.rows += rows
        picked = self._pick(logits, rows)
        self.next_tokens = torch.cat([self.next_tokens, picked])

    def step(self, model: Any) -> None:
        """Feed every row its last token and pick the next one."""
        ones = torch.ones(self.size, 1, dtype=self.mask.dtype, device=self.device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        logits = self._forward(model, self.next_tokens[:, None], self.mask, self.cache, self.rows)
        self.next_tokens = self._pick(logits, self.rows)

    def remove(self, leaving: Sequence[Row]) -> None:
        """Drop rows from the batch (their cache rows too), and padding no row needs."""
        gone = {id(row) for row in leaving}
        keep = [i for i, row in enumerate(self.rows) if id(row) not in gone]
        if len(keep) == self.size:
            return
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache, self.mask = None, self.mask[:0, :0]
            self.next_tokens = self.next_tokens[:0]
            return
        index = torch.tensor(keep, device=self.device)
        self.cache.batch_select_indices(index)
        self.mask, self.next_tokens = self.mask[index], self.next_tokens[index]
        if self.stackable:
            self._trim_padding()

    def adapters_changed(self) -> None:
        """Forget the adapter mode: adapters were loaded or unloaded (the model may be new)."""
        self.adapter_mode = None

    def _forward(
        self, model: Any, ids: torch.Tensor, mask: torch.Tensor, cache: Any, rows: list[Row]
    ) -> torch.Tensor:
        """Run ``ids`` through the model on top of ``cache``; the last position's logits."""
        positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)[:, -ids.shape[1] :]
        output = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
            **self._adapter_options(model, rows),
        )
        return output.logits[:, -1]

    def _adapter_options(self, model: Any, rows: list[Row]) -> dict[str, Any]:
        """Set the model's adapters up for ``rows``; the extra arguments of the forward pass.

        PEFT's ``adapter_names`` costs a hook on every LoRA layer and a split of every
        batch, so it is used only when the rows really mix adapters. Rows that all use
        the base model run with the adapter layers switched off, rows that all use one
        adapter with it active; the switch happens only when the mode changes.
        """
        if not hasattr(model, "peft_config"):
            return {}
        names = {row.adapter or BASE for row in rows}
        mode = names.pop() if len(names) == 1 else MIXED
        if mode != self.adapter_mode:
            if mode == BASE:
                model.base_model.disable_adapter_layers()
            else:
                model.base_model.enable_adapter_layers()
                if mode != MIXED:
                    model.set_adapter(mode, inference_mode=True)
            self.adapter_mode = mode
        return {"adapter_names": [row.adapter or BASE for row in rows]} if mode == MIXED else {}

    def _pick(self, logits: torch.Tensor, rows: list[Row]) -> torch.Tensor:
        """Each row's next token, recorded on the row (which may finish it)."""
        scores = logits.float()
        argmaxes = scores.argmax(dim=-1).tolist()
        tokens = [
            row.pick(score, top) for row, score, top in zip(rows, scores, argmaxes, strict=True)
        ]
        for row, token in zip(rows, tokens, strict=True):
            row.advance(token, self.tokenizer, self.stop_ids)
        return torch.tensor(tokens, dtype=torch.long, device=self.device)

    def _trim_padding(self) -> None:
        """Cut the leading columns that are padding in every remaining row."""
        first = int(self.mask.any(dim=0).int().argmax())
        if first > 0:
            self.mask = self.mask[:, first:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]


def _config(model: Any) -> Any:
    """The transformers config of a plain or PEFT model."""
    return model.get_base_model().config if hasattr(model, "get_base_model") else model.config


def _stackable(cache: DynamicCache) -> bool:
    """Whether every layer is a plain full-attention layer (whose tensors can be padded)."""
    return all(type(layer) is DynamicLayer and layer.is_initialized for layer in cache.layers)


def _stack(
    cache: DynamicCache, mask: torch.Tensor, joining: DynamicCache, joining_mask: torch.Tensor
) -> torch.Tensor:
    """Put ``joining``'s rows under ``cache``'s (in place); the stacked attention mask.

    The shorter of the two is padded on the left with masked zeros to the longer's width.
    """
    width = max(mask.shape[1], joining_mask.shape[1])
    for layer, new in zip(cache.layers, joining.layers, strict=True):
        layer.keys = torch.cat([_pad_left(layer.keys, width), _pad_left(new.keys, width)])
        layer.values = torch.cat([_pad_left(layer.values, width), _pad_left(new.values, width)])
    return torch.cat([_pad_left(mask, width), _pad_left(joining_mask, width)])


def _pad_left(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """Zeros prepended on the sequence axis (-2 for KV tensors, -1 for a mask) to ``width``."""
    if tensor.dim() == 2:
        return F.pad(tensor, (width - tensor.shape[1], 0))
    return F.pad(tensor, (0, 0, width - tensor.shape[2], 0))
