"""Load models and tokenizers safely: safetensors only, no remote code unless asked for."""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

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
) -> Any:
    """Load a causal LM from safetensors weights only."""
    source = _source(name_or_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source,
            dtype=dtype,
            revision=revision,
            trust_remote_code=trust_remote_code,
            use_safetensors=True,
        )
    except Exception as err:
        raise _load_error(name_or_path, err) from None
    return model.to(device)


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
