"""The one module that touches PEFT: attach, save and load adapters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peft import LoraConfig, PeftModel, get_peft_model

from tuneforge.config.schema import MethodConfig


def attach_lora(model: Any, method: MethodConfig) -> Any:
    """Wrap a model with a fresh LoRA adapter; only the adapter's weights train."""
    config = LoraConfig(
        r=method.r,
        lora_alpha=method.alpha,
        lora_dropout=method.dropout,
        target_modules=method.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def load_adapter(model: Any, adapter_dir: str | Path) -> Any:
    """Put a saved adapter (safetensors) on a base model, for inference."""
    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)


def save_adapter(model: Any, out_dir: str | Path) -> None:
    """Save only the adapter's weights and config, as safetensors."""
    model.save_pretrained(str(out_dir), safe_serialization=True)


def merge(model: Any) -> Any:
    """Fold the adapter into the base weights and return the plain model."""
    return model.merge_and_unload()


def parameter_counts(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
