"""Load models and tokenizers safely: safetensors only, no remote code unless asked for."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from tuneforge.errors import ModelError


def is_local(name_or_path: str) -> bool:
    """True when ``name_or_path`` names a local path rather than a hub id."""
    return Path(name_or_path).expanduser().exists() or name_or_path.startswith((".", "/", "~"))


def check_local_model_dir(path: str | Path) -> Path:
    """Check that a local model folder can be loaded safely.

    Raises:
        ModelError: the folder is missing, has no config, or has no safetensors weights.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ModelError(f"model.name_or_path {str(path)!r}: directory not found")
    if not (path / "config.json").is_file():
        raise ModelError(f"model.name_or_path {str(path)!r}: no config.json; not a model folder")
    if not any(path.glob("*.safetensors")):
        pickled = sorted(p.name for p in path.glob("*.bin")) + sorted(
            p.name for p in path.glob("*.pt")
        )
        hint = f" (found {', '.join(pickled)}: pickle weights are refused)" if pickled else ""
        raise ModelError(
            f"model.name_or_path {str(path)!r}: no *.safetensors weights{hint}; convert with "
            "`model.save_pretrained(dir, safe_serialization=True)`"
        )
    return path


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
