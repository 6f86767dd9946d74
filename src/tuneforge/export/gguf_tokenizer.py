"""The tokenizer half of a GGUF file: vocabulary, merges, special ids, chat template.

A GGUF carries no ``tokenizer.json``; llama.cpp rebuilds the tokenizer from
metadata under ``tokenizer.ggml.*``. This module reads the merged model's
Hugging Face tokenizer and writes what llama.cpp's own converter would: the
vocabulary padded to the embedding's row count, token types, merges, the
pre-tokenizer's llama.cpp name, the special ids and the exact chat template.
Only byte-level BPE tokenizers (GPT-2 style: Llama 3, Qwen2, the tiny model)
are supported; a tokenizer whose text splitting llama.cpp could not reproduce is
refused rather than exported with silently different token ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf import GGUFWriter, TokenType
from transformers import PreTrainedTokenizerBase

from tuneforge.errors import ModelError

# llama.cpp names a pre-tokenizer by the regex it splits text with before BPE.
GPT2_PRE = "gpt-2"
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPLIT_PRE_TOKENIZERS = {LLAMA3_SPLIT: "llama-bpe", QWEN2_SPLIT: "qwen2"}
SUPPORTED_PRE = (GPT2_PRE, *SPLIT_PRE_TOKENIZERS.values())


@dataclass
class GGUFVocab:
    """Everything ``tokenizer.*`` in a GGUF says, gathered from a Hugging Face tokenizer."""

    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    pre: str
    special_ids: dict[str, int] = field(default_factory=dict)
    eos_token_ids: list[int] = field(default_factory=list)
    add_bos: bool = False
    add_eos: bool = False
    chat_template: str | list[dict[str, str]] | None = None

    def add_to(self, writer: GGUFWriter) -> None:
        """Write the ``tokenizer.ggml.*`` keys and the chat template."""
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.token_types)
        writer.add_token_merges(self.merges)
        for kind, token_id in self.special_ids.items():
            getattr(writer, f"add_{kind}_token_id")(token_id)
        if len(self.eos_token_ids) > 1:
            # Ollama stops on every id listed here; llama.cpp on eos, eot and known texts.
            writer.add_array("tokenizer.ggml.eos_token_ids", self.eos_token_ids)
        # Written even when false: llama.cpp and Ollama default add_bos to true.
        writer.add_add_bos_token(self.add_bos)
        writer.add_add_eos_token(self.add_eos)
        if self.chat_template is not None:
            writer.add_chat_template(self.chat_template)


def gguf_vocab(
    tokenizer: PreTrainedTokenizerBase, n_vocab: int, generation_eos: list[int]
) -> GGUFVocab:
    """The GGUF tokenizer metadata of ``tokenizer`` for a model with ``n_vocab`` embedding rows.

    Args:
        tokenizer: The merged model's (fast) tokenizer.
        n_vocab: Rows of the embedding matrix; the token list is padded to it with
            ``[PAD<id>]`` tokens of type UNUSED, as llama.cpp's converter does.
        generation_eos: ``eos_token_id`` of ``generation_config.json`` (all ids that
            end a reply), possibly empty.

    Returns:
        The metadata, ready for :meth:`GGUFVocab.add_to`.

    Raises:
        ModelError: the tokenizer is not byte-level BPE, its pre-tokenizer has no
            llama.cpp equivalent, or it has more tokens than the model has rows.
    """
    spec = _backend_spec(tokenizer)
    pre = pre_tokenizer_name(spec)
    tokens, token_types = _token_list(tokenizer, spec, n_vocab)
    eos_ids = _eos_ids(tokenizer, generation_eos)
    return GGUFVocab(
        tokens=tokens,
        token_types=token_types,
        merges=_merges(spec),
        pre=pre,
        special_ids=_special_ids(tokenizer, eos_ids),
        eos_token_ids=eos_ids,
        add_bos=_adds(tokenizer, tokenizer.bos_token_id, first=True),
        add_eos=_adds(tokenizer, tokenizer.eos_token_id, first=False),
        chat_template=_chat_template(tokenizer),
    )


def pre_tokenizer_name(spec: dict[str, Any]) -> str:
    """llama.cpp's name (``tokenizer.ggml.pre``) for a ``tokenizer.json``'s pre-tokenizer.

    Raises:
        ModelError: the model is not byte-level BPE, or llama.cpp has no pre-tokenizer
            that splits text the same way.
    """
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        kind = "sentencepiece-style BPE" if model.get("byte_fallback") else model.get("type")
        raise ModelError(
            f"GGUF export supports byte-level BPE tokenizers only, not {kind}; "
            "convert this model with llama.cpp's convert_hf_to_gguf.py"
        )
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    if len(steps) == 1 and _is_byte_level(steps[0], use_regex=True):
        return GPT2_PRE
    if len(steps) == 2 and _is_byte_level(steps[1], use_regex=False):
        split = steps[0]
        name = SPLIT_PRE_TOKENIZERS.get((split.get("pattern") or {}).get("Regex", ""))
        isolated = split.get("behavior") == "Isolated" and not split.get("invert")
        if split.get("type") == "Split" and isolated and name:
            return name
    raise ModelError(
        f"the tokenizer's pre-tokenizer {json.dumps(pre)[:120]} has no llama.cpp equivalent "
        f"(supported: {', '.join(SUPPORTED_PRE)}); GGUF token ids would differ"
    )


def _is_byte_level(step: dict[str, Any], *, use_regex: bool) -> bool:
    return (
        step.get("type") == "ByteLevel"
        and bool(step.get("use_regex", True)) == use_regex
        and not step.get("add_prefix_space", False)
    )


def _backend_spec(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ModelError(
            f"{type(tokenizer).__name__} has no fast tokenizer; GGUF export needs tokenizer.json"
        )
    spec = json.loads(backend.to_str())
    normalizer = (spec.get("normalizer") or {}).get("type")
    # NFC is what Qwen2 ships; llama.cpp skips it, which changes nothing on NFC text.
    if normalizer not in (None, "NFC"):
        raise ModelError(
            f"the tokenizer's {normalizer} normalizer has no llama.cpp equivalent; "
            "GGUF token ids would differ"
        )
    return spec


def _token_list(
    tokenizer: PreTrainedTokenizerBase, spec: dict[str, Any], n_vocab: int
) -> tuple[list[str], list[int]]:
    """Token strings by id and their llama.cpp types, padded to ``n_vocab``."""
    by_id: dict[int, tuple[str, int]] = {
        index: (token, TokenType.NORMAL) for token, index in spec["model"]["vocab"].items()
    }
    for added in spec.get("added_tokens", []):
        kind = TokenType.CONTROL if added.get("special") else TokenType.USER_DEFINED
        by_id[added["id"]] = (added["content"], kind)
    largest = max(by_id)
    if largest >= n_vocab:
        raise ModelError(
            f"the tokenizer has token id {largest} but the model has {n_vocab} embedding rows; "
            "resize the embeddings before exporting"
        )
    tokens, types = [], []
    for index in range(n_vocab):
        token, kind = by_id.get(index, (f"[PAD{index}]", TokenType.UNUSED))
        tokens.append(token)
        types.append(int(kind))
    return tokens, types


def _merges(spec: dict[str, Any]) -> list[str]:
    merges = spec["model"].get("merges") or []
    # tokenizer.json has "a b" strings (old) or ["a", "b"] pairs (tokenizers >= 0.20);
    # byte-level pieces never hold a real space, so joining with one is unambiguous.
    return [m if isinstance(m, str) else " ".join(m) for m in merges]


def _eos_ids(tokenizer: PreTrainedTokenizerBase, generation_eos: list[int]) -> list[int]:
    """Every id that ends a reply; the tokenizer's EOS first (it is what templates emit)."""
    primary = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return list(dict.fromkeys([*primary, *generation_eos]))


def _special_ids(tokenizer: PreTrainedTokenizerBase, eos_ids: list[int]) -> dict[str, int]:
    ids = {
        "bos": tokenizer.bos_token_id,
        "eos": eos_ids[0] if eos_ids else None,
        "unk": tokenizer.unk_token_id,
        "pad": tokenizer.pad_token_id,
    }
    if len(eos_ids) > 1:
        # llama.cpp stops on eos and eot (and on well-known end texts); the second
        # generation EOS goes in eot so that llama.cpp stops on it too.
        ids["eot"] = eos_ids[1]
    return {kind: int(value) for kind, value in ids.items() if value is not None}


def _adds(tokenizer: PreTrainedTokenizerBase, token_id: int | None, *, first: bool) -> bool:
    """Whether the tokenizer puts ``token_id`` first (BOS) or last (EOS) on its own."""
    if token_id is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0 if first else -1] == token_id


def _chat_template(tokenizer: PreTrainedTokenizerBase) -> str | list[dict[str, str]] | None:
    template = tokenizer.chat_template
    if isinstance(template, dict):  # named templates: GGUF stores them side by side
        return [{"name": name, "template": text} for name, text in template.items()]
    return template


def generation_eos_ids(merged_dir: Path) -> list[int]:
    """``eos_token_id`` of ``generation_config.json`` as a list (empty when absent)."""
    path = merged_dir / "generation_config.json"
    if not path.is_file():
        return []
    value = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id")
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, list) else [value])]
