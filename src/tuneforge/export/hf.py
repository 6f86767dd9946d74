"""The Hugging Face exports: the adapter alone, and base + adapter merged as safetensors.

The merged folder is what every other format is converted from, so it carries
everything a reader needs to behave as training did: the tokenizer with the
chat template the model was trained with, and a ``generation_config.json``
whose EOS ids are the tokens that ended each trained reply.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig

from tuneforge.config.schema import Config
from tuneforge.data.templates import fallback_template, fallback_template_name
from tuneforge.errors import StageFailed
from tuneforge.models.load import load_tokenizer
from tuneforge.train.adapters import load_adapter, merge
from tuneforge.train.methods import MERGEABLE_KINDS, is_peft, load_base, load_trained

MERGE_TOLERANCE = 1e-4
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")


def write_adapter(config: Config, train_dir: Path, out: Path) -> str:
    """Copy the trained adapter; say why not when the method trains the model's own weights."""
    if not is_peft(config.method):
        return f"skipped: method.kind {config.method.kind!r} trains the model's own weights"
    shutil.copytree(train_dir / "adapter", out)
    return "adapter"


def can_merge(config: Config) -> bool:
    """Whether there is a full model to write: a mergeable adapter, or full/freeze weights."""
    return config.method.kind in MERGEABLE_KINDS or not is_peft(config.method)


def write_merged(config: Config, model_path: str, train_dir: Path, out: Path) -> dict[str, Any]:
    """Write base + adapter as one fp32 safetensors model, with tokenizer and stop tokens.

    The merged model is checked against base + adapter on a probe input; a
    difference above ``MERGE_TOLERANCE`` fails the stage. A qlora adapter is merged
    onto the unquantized fp32 base, so the export is a plain full-precision model.
    full/freeze runs saved a whole model: that is the merged model.
    """
    spec = config.model
    options = {"revision": spec.revision, "trust_remote_code": spec.trust_remote_code}
    tokenizer = load_tokenizer(model_path, **options)
    # ship the template the model was trained with, so serving renders prompts the same way
    name = config.data.template or (
        None if tokenizer.chat_template else fallback_template_name(tokenizer)
    )
    if name:
        tokenizer.chat_template = fallback_template(name)
    model, diff = merged_model(config, model_path, train_dir, tokenizer)
    configured = getattr(model, "generation_config", None)  # a reward model generates nothing
    stops = stop_token_ids(tokenizer, configured)
    if configured is not None:
        model.generation_config = generation_config(configured, stops, tokenizer)
    dtype = export_dtype(config.export.dtype, model.config)
    model.to(dtype).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return {"merge_max_abs_diff": diff, "eos_token_ids": stops, "dtype": str(dtype)[6:]}


def merged_model(
    config: Config, model_path: str, train_dir: Path, tokenizer: Any
) -> tuple[torch.nn.Module, float]:
    """Base + adapter folded into one fp32 model, and its largest logit difference from them.

    A qlora adapter learned its update on the 4-bit base; with ``export.qlora_base``
    ``dequantized`` it is merged onto that base dequantized, which reproduces the
    trained (and evaluated) model, rather than onto the original weights, which
    differ from it by the quantization error.
    """
    on_4bit = config.method.kind == "qlora" and config.export.qlora_base == "dequantized"
    cpu = torch.device("cpu")
    # merge in fp32 so rounding does not depend on the training precision
    model = load_trained(model_path, config, train_dir, torch.float32, cpu, quantize=on_4bit)
    if not is_peft(config.method):  # full/freeze saved the merged model itself
        return model, 0.0
    probe = torch.tensor([tokenizer("The merged model must match.")["input_ids"]])
    with torch.no_grad():
        before = model(input_ids=probe).logits
    if on_4bit:
        del model
        base = load_base(model_path, config, torch.float32, cpu, quantize=True).dequantize()
        folder = train_dir / "adapter"
        model = load_adapter(base, folder, name=config.method.adapter_name)
    model = merge(model)
    with torch.no_grad():
        diff = float((before - model(input_ids=probe).logits).abs().max())
    if diff > MERGE_TOLERANCE:
        raise StageFailed(
            f"merged model differs from base + adapter by {diff:.2e} (tolerance "
            f"{MERGE_TOLERANCE:.0e}); the adapter in {train_dir} does not fold into this base"
        )
    return model, diff


def export_dtype(name: str, model_config: Any) -> torch.dtype:
    """The dtype to save in: the one asked for, or (auto) the base model's own, else fp32."""
    if name == "auto":
        found = getattr(model_config, "dtype", None) or getattr(model_config, "torch_dtype", None)
        if isinstance(found, str):
            found = getattr(torch, found, None)
        return found if isinstance(found, torch.dtype) else torch.float32
    return getattr(torch, name)


def stop_token_ids(tokenizer: Any, configured: GenerationConfig | None = None) -> list[int]:
    """Ids that end a reply: the tokenizer's EOS, the template's end-of-turn token, the model's.

    A chat template closes each assistant turn with its end-of-turn token
    (``<|im_end|>``, ``<|eot_id|>``, ...); training taught the model to emit it, so
    every reader must stop there, whether or not it is the tokenizer's EOS.
    """
    ids = {tokenizer.eos_token_id}
    template = tokenizer.chat_template or ""
    vocab = tokenizer.get_vocab()
    ids |= {vocab[token] for token in END_OF_TURN if token in template and token in vocab}
    found = getattr(configured, "eos_token_id", None)
    ids |= set(found) if isinstance(found, list) else {found}
    return sorted(i for i in ids if i is not None)


def generation_config(
    base: GenerationConfig | None, stops: list[int], tokenizer: Any
) -> GenerationConfig:
    """The base model's generation settings with the training stop tokens and pad id."""
    config = copy.deepcopy(base) if base is not None else GenerationConfig()
    config.eos_token_id = stops if len(stops) > 1 else stops[0]
    pad = tokenizer.pad_token_id
    config.pad_token_id = pad if pad is not None else stops[0]
    return config
