"""The export stage: adapter, merged safetensors model, tokenizer, and a model card."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from tuneforge.config.schema import Config
from tuneforge.data.templates import fallback_template, fallback_template_name
from tuneforge.export.card import model_card
from tuneforge.models.load import load_tokenizer
from tuneforge.train.adapters import merge
from tuneforge.train.methods import MERGEABLE_KINDS, is_peft, load_trained

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
    difference above ``MERGE_TOLERANCE`` fails the stage. A qlora adapter is merged
    onto the unquantized fp32 base, so the export is a plain full-precision model.
    full/freeze runs saved a whole model: that is the merged model, and there is no
    adapter to export; prompt/prefix adapters cannot be merged. The summary says
    what was skipped and why.
    """
    summary: dict[str, Any] = {}
    kind = config.method.kind
    if config.export.adapter and is_peft(config.method):
        shutil.copytree(train_dir / "adapter", out_dir / "adapter")
        summary["adapter"] = "adapter"
    elif config.export.adapter:
        summary["adapter"] = f"skipped: method.kind {kind!r} trains the model's own weights"
    if config.export.merged and (kind in MERGEABLE_KINDS or not is_peft(config.method)):
        summary["merged"] = "merged"
        summary["merge_max_abs_diff"] = _write_merged(
            config, model_path, train_dir, out_dir / "merged"
        )
    elif config.export.merged:
        summary["merged"] = f"skipped: a method.kind {kind!r} adapter has no weights to merge"
    if lineage.get("gates_overridden"):
        summary["gates_overridden"] = lineage["gates_overridden"]
    (out_dir / "README.md").write_text(model_card(config, lineage), encoding="utf-8")
    return summary


def _write_merged(config: Config, model_path: str, train_dir: Path, out: Path) -> float:
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
    model = load_trained(
        model_path, config, train_dir, torch.float32, torch.device("cpu"), quantize=False
    )
    if not is_peft(config.method):  # full/freeze saved the merged model itself
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        return 0.0
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
