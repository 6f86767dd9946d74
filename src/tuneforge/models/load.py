"""Load models and tokenizers safely: safetensors only, no remote code unless asked for.

This is also the one module that asks for bitsandbytes quantization (4-bit NF4 for
QLoRA), through transformers' ``BitsAndBytesConfig``.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)

from tuneforge.errors import ModelError
from tuneforge.models.local import check_local_model_dir, is_local


def load_tokenizer(
    name_or_path: str, *, revision: str | None = None, trust_remote_code: bool = False
) -> PreTrainedTokenizerBase:
    """Load a tokenizer from a local folder or the hub; pad token defaults to EOS."""
    source = _source(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source, revision=revision, trust_remote_code=trust_remote_code
        )
    except Exception as err:
        raise _load_error(name_or_path, err) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    name_or_path: str,
    *,
    dtype: torch.dtype = torch.float32,
    revision: str | None = None,
    trust_remote_code: bool = False,
    device: torch.device | str = "cpu",
    quantize: bool = False,
    double_quant: bool = True,
    head: str = "causal",
    pad_token_id: int | None = None,
) -> Any:
    """Load a causal LM (or a reward model) from safetensors weights only.

    Args:
        name_or_path: Hub id or local folder.
        dtype: Weight dtype (and, when quantizing on a GPU, the compute dtype).
        revision: Hub revision.
        trust_remote_code: Run model code shipped with the model.
        device: Where the model goes.
        quantize: Load the linear layers as bitsandbytes 4-bit NF4 (QLoRA's base).
        double_quant: With ``quantize``, also quantize the quantization constants.
        head: ``causal`` (language-model head) or ``score`` (one scalar per sequence: a
            reward model; a causal checkpoint gets a new, randomly initialised score head).
        pad_token_id: With ``score``, recorded in the model config (the head's pooling
            looks for it).

    Raises:
        ModelError: the model cannot be loaded, or bitsandbytes is missing for ``quantize``.
    """
    source = _source(name_or_path)
    options: dict[str, Any] = {}
    if quantize:
        # a reward model's score head is new and tiny: it stays in full precision
        skip = ["score"] if head == "score" else None
        options["quantization_config"] = nf4_config(dtype, torch.device(device), double_quant, skip)
        # quantized weights are placed while loading; bitsandbytes models refuse .to()
        options["device_map"] = {"": torch.device(device)}
    auto: Any = AutoModelForCausalLM
    if head == "score":
        auto = AutoModelForSequenceClassification
        options.update(num_labels=1, pad_token_id=pad_token_id)
    try:
        model = auto.from_pretrained(
            source,
            dtype=dtype,
            revision=revision,
            trust_remote_code=trust_remote_code,
            use_safetensors=True,
            **options,
        )
    except Exception as err:
        raise _load_error(name_or_path, err) from None
    return model if quantize else model.to(device)


def nf4_config(
    dtype: torch.dtype, device: torch.device, double_quant: bool, skip: list[str] | None = None
) -> Any:
    """The QLoRA quantization: 4-bit NormalFloat weights, computed in ``dtype`` (fp32 on CPU).

    Raises:
        ModelError: bitsandbytes is not installed.
    """
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelError(
            "method.kind 'qlora': needs bitsandbytes; `pip install bitsandbytes` or use "
            "method.kind lora"
        )
    from transformers import BitsAndBytesConfig

    # bitsandbytes' CPU backend dequantizes and runs a plain matmul: fp32 keeps it exact
    # and fast where bf16 matmuls are emulated; GPUs compute in the training dtype.
    compute = dtype if device.type == "cuda" else torch.float32
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute,
        llm_int8_skip_modules=skip,
    )


def _source(name_or_path: str) -> str:
    if is_local(name_or_path):
        return str(check_local_model_dir(name_or_path))
    return name_or_path


def _load_error(name_or_path: str, err: Exception) -> ModelError:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    if is_local(name_or_path):
        return ModelError(f"model.name_or_path {name_or_path!r}: cannot load: {first}")
    offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
    return ModelError(
        f"model.name_or_path {name_or_path!r}: not a local directory and not loadable from the "
        f"Hugging Face Hub{offline}; download it where there is internet "
        f"(`hf download {name_or_path} --local-dir DIR`) and set model.name_or_path to DIR"
    )
