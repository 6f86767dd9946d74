"""GGUF export: a merged Hugging Face folder to one file llama.cpp and Ollama run.

:func:`write_gguf` converts a Llama-family model (Llama, Mistral, Qwen2) without
llama.cpp: weights are streamed tensor by tensor into the ``gguf`` package's
writer, so memory stays near one tensor's size. It writes what llama.cpp's own
``convert_hf_to_gguf.py`` writes for these architectures:

- tensor names from gguf's tensor map (``blk.N.attn_q.weight`` ...);
- Llama/Mistral Q and K rows permuted from Hugging Face's rotate-half rotary
  layout to the interleaved pairs llama.cpp's rope uses (Qwen2 uses NeoX rope in
  llama.cpp and needs none); the permutation is exact and its inverse is applied
  by every GGUF reader;
- no ``output.weight`` when the embeddings are tied: llama.cpp falls back to
  ``token_embd.weight`` and Hugging Face readers re-tie, so the file stays smaller;
- 1-D tensors (norms, biases) in f32; 2-D ones in the requested type, f16 for a
  q8_0 row that is not a whole number of 32-value blocks;
- the tokenizer and chat template (:mod:`tuneforge.export.gguf_tokenizer`).

:func:`verify_gguf` (from :mod:`tuneforge.export.gguf_verify`) loads the file
back with an independent reader and compares it with the merged model.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import (
    GGML_QUANT_VERSION,
    MODEL_ARCH,
    MODEL_ARCH_NAMES,
    GGMLQuantizationType,
    GGUFWriter,
    LlamaFileType,
    get_tensor_name_map,
)
from gguf.quants import quant_shape_to_byte_shape, quantize
from safetensors import safe_open
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig

from tuneforge.errors import ConfigError, ModelError
from tuneforge.export.gguf_tokenizer import GGUFVocab, generation_eos_ids, gguf_vocab
from tuneforge.export.gguf_verify import verify_gguf

__all__ = ["ARCHITECTURES", "QUANT_TYPES", "verify_gguf", "write_gguf"]

# Hugging Face class -> llama.cpp architecture. Mistral is llama to llama.cpp.
ARCHITECTURES: dict[str, MODEL_ARCH] = {
    "LlamaForCausalLM": MODEL_ARCH.LLAMA,
    "MistralForCausalLM": MODEL_ARCH.LLAMA,
    "Qwen2ForCausalLM": MODEL_ARCH.QWEN2,
}
# The types llama.cpp's converter writes; smaller ones come from llama-quantize.
QUANT_TYPES: dict[str, tuple[GGMLQuantizationType, LlamaFileType]] = {
    "f32": (GGMLQuantizationType.F32, LlamaFileType.ALL_F32),
    "f16": (GGMLQuantizationType.F16, LlamaFileType.MOSTLY_F16),
    "bf16": (GGMLQuantizationType.BF16, LlamaFileType.MOSTLY_BF16),
    "q8_0": (GGMLQuantizationType.Q8_0, LlamaFileType.MOSTLY_Q8_0),
}
_BYTES = {GGMLQuantizationType.F32: 4, GGMLQuantizationType.F16: 2, GGMLQuantizationType.BF16: 2}


@dataclass(frozen=True)
class _Tensor:
    """One tensor to write: where it comes from, what it is called, how it is stored."""

    source: Path
    hf_name: str
    name: str
    shape: tuple[int, ...]
    qtype: GGMLQuantizationType
    rope_heads: int | None  # heads to permute rows by (Llama q/k), else None


def write_gguf(
    merged_dir: Path, out_file: Path, quant: str = "f16", *, name: str | None = None
) -> dict[str, Any]:
    """Convert a merged Hugging Face model folder to a single GGUF file.

    Args:
        merged_dir: A folder with ``config.json``, safetensors weights and a fast
            tokenizer (``tokenizer.json``), as the export stage's ``merged/``.
        out_file: The ``.gguf`` file to write (parent created). It is written under a
            temporary name and renamed, so a failed export leaves no partial file.
        quant: ``f16`` (default), ``q8_0``, ``bf16`` or ``f32``.
        name: ``general.name`` in the file; defaults to ``out_file``'s stem.

    Returns:
        A summary: file, quant, architecture, tensor counts by storage type, size in
        bytes, vocabulary size, whether embeddings are tied, the stop token ids, and
        the seconds taken.

    Raises:
        ConfigError: an unknown ``quant``.
        ModelError: an unsupported architecture, rope scaling, bias layout or
            tokenizer, or missing weights.
    """
    started = time.time()
    merged_dir, out_file = Path(merged_dir), Path(out_file)
    if quant not in QUANT_TYPES:
        raise ConfigError(
            f"GGUF quant {quant!r} is unknown; choose one of {', '.join(QUANT_TYPES)}"
        )
    qtype, file_type = QUANT_TYPES[quant]
    arch = _architecture(merged_dir)
    config = AutoConfig.from_pretrained(merged_dir)
    _refuse_unsupported(config, arch)
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    vocab = gguf_vocab(tokenizer, config.vocab_size, generation_eos_ids(merged_dir))
    tensors = _plan(merged_dir, config, arch, qtype)

    out_file.parent.mkdir(parents=True, exist_ok=True)
    partial = out_file.with_name(out_file.name + ".partial")
    try:
        header = _Header(arch, config, name or out_file.stem, file_type, vocab)
        _write(partial, header, tensors)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(out_file)
    return {
        "file": str(out_file),
        "quant": quant,
        "architecture": MODEL_ARCH_NAMES[arch],
        "tensors": len(tensors),
        "tensor_types": dict(Counter(tensor.qtype.name.lower() for tensor in tensors)),
        "bytes": out_file.stat().st_size,
        "vocab_size": len(vocab.tokens),
        "tied_embeddings": not any(t.name == "output.weight" for t in tensors),
        "eos_token_ids": vocab.eos_token_ids,
        "chat_template": vocab.chat_template is not None,
        "seconds": round(time.time() - started, 2),
    }


@dataclass(frozen=True)
class _Header:
    """What goes before the tensors: architecture, hyper-parameters, tokenizer."""

    arch: MODEL_ARCH
    config: PretrainedConfig
    name: str
    file_type: LlamaFileType
    vocab: GGUFVocab


def _write(path: Path, header: _Header, tensors: list[_Tensor]) -> None:
    """Write the header, then stream the tensors one at a time (memory: one tensor)."""
    writer = GGUFWriter(path, MODEL_ARCH_NAMES[header.arch])
    try:
        _add_metadata(writer, header.config, header.name, header.file_type)
        header.vocab.add_to(writer)
        for tensor in tensors:
            writer.add_tensor_info(
                tensor.name, tensor.shape, np.dtype(np.float32), _nbytes(tensor), tensor.qtype
            )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for tensor in tensors:
            writer.write_tensor_data(_encoded(tensor))
    finally:
        writer.close()


def _architecture(merged_dir: Path) -> MODEL_ARCH:
    """The llama.cpp architecture of the folder's model, read before transformers loads it."""
    config_file = merged_dir / "config.json"
    if not config_file.is_file():
        raise ModelError(f"{merged_dir} has no config.json; export the merged model first")
    names = json.loads(config_file.read_text(encoding="utf-8")).get("architectures") or ["none"]
    arch = ARCHITECTURES.get(names[0])
    if arch is None:
        raise ModelError(
            f"GGUF export does not support architecture {names[0]} ({config_file}); "
            f"supported: {', '.join(ARCHITECTURES)}"
        )
    return arch


def _refuse_unsupported(config: PretrainedConfig, arch: MODEL_ARCH) -> None:
    """Refuse settings llama.cpp would compute differently from transformers."""
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", None):
        raise ModelError(
            f"GGUF export supports default rope only, not rope_type {rope_type!r} in config.json"
        )
    if arch == MODEL_ARCH.LLAMA and (
        getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False)
    ):
        raise ModelError("GGUF export of Llama with attention_bias or mlp_bias is not supported")
    if getattr(config, "use_sliding_window", False):
        raise ModelError("GGUF export does not support use_sliding_window: true in config.json")


def _add_metadata(
    writer: GGUFWriter, config: PretrainedConfig, name: str, file_type: LlamaFileType
) -> None:
    """``general.*`` and the ``<arch>.*`` hyper-parameters llama.cpp reads."""
    head_dim = _head_dim(config)
    writer.add_type("model")
    writer.add_name(name)
    writer.add_file_type(file_type)
    writer.add_quantization_version(GGML_QUANT_VERSION)
    writer.add_vocab_size(config.vocab_size)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(_kv_heads(config))
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    if head_dim != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)


def _head_dim(config: PretrainedConfig) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _kv_heads(config: PretrainedConfig) -> int:
    return getattr(config, "num_key_value_heads", None) or config.num_attention_heads


def _rope_theta(config: PretrainedConfig) -> float:
    rope = getattr(config, "rope_parameters", None) or {}
    return float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def _plan(
    merged_dir: Path, config: PretrainedConfig, arch: MODEL_ARCH, qtype: GGMLQuantizationType
) -> list[_Tensor]:
    """Every tensor to write, named and typed, in the order of the source files."""
    names = get_tensor_name_map(arch, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    plan: list[_Tensor] = []
    for source, hf_name, shape in _source_tensors(merged_dir):
        if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
            continue  # recomputed by every runtime / the embedding is the output layer
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ModelError(f"weight {hf_name} in {source.name} has no GGUF tensor name")
        plan.append(_Tensor(source, hf_name, name, shape, _storage(name, shape, qtype), None))
    if not tied and not any(t.name == "output.weight" for t in plan):
        raise ModelError(f"{merged_dir} has no lm_head.weight and its embeddings are not tied")
    if arch == MODEL_ARCH.LLAMA:
        heads = {"attn_q": config.num_attention_heads, "attn_k": _kv_heads(config)}
        plan = [_with_rope_heads(t, heads) for t in plan]
    return plan


def _with_rope_heads(tensor: _Tensor, heads: dict[str, int]) -> _Tensor:
    kind = tensor.name.split(".")[-2]
    return dataclasses.replace(tensor, rope_heads=heads[kind]) if kind in heads else tensor


def _storage(
    name: str, shape: tuple[int, ...], qtype: GGMLQuantizationType
) -> GGMLQuantizationType:
    """How a tensor is stored: llama.cpp keeps 1-D tensors and biases in f32."""
    if len(shape) <= 1 or not name.endswith(".weight"):
        return GGMLQuantizationType.F32
    if qtype == GGMLQuantizationType.Q8_0 and shape[-1] % 32:
        return GGMLQuantizationType.F16  # q8_0 blocks are 32 values along a row
    return qtype


def _source_tensors(merged_dir: Path) -> Iterator[tuple[Path, str, tuple[int, ...]]]:
    """``(file, name, shape)`` of every weight in the folder's safetensors files."""
    index = merged_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        files = sorted({merged_dir / f for f in weight_map.values()})
    else:
        files = sorted(merged_dir.glob("*.safetensors"))
    if not files:
        raise ModelError(f"{merged_dir} has no .safetensors weights; export the merged model first")
    for path in files:
        with safe_open(path, framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                yield path, key, tuple(handle.get_slice(key).get_shape())


def _nbytes(tensor: _Tensor) -> int:
    if tensor.qtype in _BYTES:
        return int(np.prod(tensor.shape)) * _BYTES[tensor.qtype]
    return int(np.prod(quant_shape_to_byte_shape(tensor.shape, tensor.qtype)))


def _encoded(tensor: _Tensor) -> np.ndarray:
    """The tensor's bytes as GGUF stores them: permuted for rope if needed, then quantized."""
    with safe_open(tensor.source, framework="pt") as handle:
        data = handle.get_tensor(tensor.hf_name).float().numpy()
    if tensor.rope_heads is not None:
        data = permute_for_rope(data, tensor.rope_heads)
    return quantize(data, tensor.qtype)


def permute_for_rope(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder Q/K rows from Hugging Face's rotate-half layout to llama.cpp's pairs.

    Hugging Face rotates dimension ``i`` with ``i + d/2`` inside each head; llama.cpp's
    Llama rope rotates ``2i`` with ``2i + 1``. Interleaving each head's two halves
    maps one onto the other, so the attention scores are unchanged.
    """
    half = weights.shape[0] // n_head // 2
    return (
        weights.reshape(n_head, 2, half, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)
    )
