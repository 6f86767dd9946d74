"""The export stage: adapter, merged safetensors model, tokenizer, and a model card."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from tuneforge.config.schema import Config
from tuneforge.data.templates import fallback_template, fallback_template_name
from tuneforge.export.card import model_card
from tuneforge.models.load import load_model, load_tokenizer
from tuneforge.train.adapters import load_adapter, merge

MERGE_TOLERANCE = 1e-4


def export_model(
    config: Config,
    model_path: str,
    train_dir: Path,
    out_dir: Path,
    lineage: dict[str, Any],
) -> dict[str, Any]:
    """Write ``adapter/``, ``merged/`` and ``README.md`` into ``out_dir``.

    The merged model is checked against base + adapter on a probe input; a
    difference above ``MERGE_TOLERANCE`` fails the stage.
    """
    summary: dict[str, Any] = {}
    adapter_dir = train_dir / "adapter"
    if config.export.adapter:
        shutil.copytree(adapter_dir, out_dir / "adapter")
        summary["adapter"] = "adapter"
    if config.export.merged:
        summary["merged"] = "merged"
        summary["merge_max_abs_diff"] = _write_merged(
            config, model_path, adapter_dir, out_dir / "merged"
        )
    (out_dir / "README.md").write_text(model_card(config, lineage), encoding="utf-8")
    return summary


def _write_merged(config: Config, model_path: str, adapter_dir: Path, out: Path) -> float:
    spec = config.model
    options = {"revision": spec.revision, "trust_remote_code": spec.trust_remote_code}
    tokenizer = load_tokenizer(model_path, **options)
    # ship the template the model was trained with, so serving renders prompts the same way
    name = config.data.template or (
        None if tokenizer.chat_template else fallback_template_name(tokenizer)
    )
    if name:
        tokenizer.chat_template = fallback_template(name)
    # merge in fp32 so rounding does not depend on the training precision
    model = load_adapter(load_model(model_path, dtype=torch.float32, **options), adapter_dir)
    probe = torch.tensor([tokenizer("The merged model must match.")["input_ids"]])
    with torch.no_grad():
        before = model(input_ids=probe).logits
        merged = merge(model)
        after = merged(input_ids=probe).logits
    diff = float((before - after).abs().max())
    if diff > MERGE_TOLERANCE:
        raise RuntimeError(f"merged model differs from base + adapter by {diff:.2e}")
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return diff
