"""Eval of a reward model: pairwise accuracy and mean margin on held-out pairs, tuned vs base."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneforge.config.schema import Config
from tuneforge.errors import DataError
from tuneforge.models.hardware import device, resolve_dtype
from tuneforge.models.load import load_tokenizer
from tuneforge.train.methods import is_peft, load_base, load_trained


def evaluate_reward_model(
    config: Config,
    model_path: str,
    records: list[dict[str, Any]],
    train_dir: Path,
    out_dir: Path,
    split: str = "test",
) -> dict[str, Any]:
    """Pairwise accuracy and mean margin of the reward model (and its base) on held-out pairs."""
    pairs = [r for r in records if "input" in r]
    if not pairs:
        raise DataError(f"eval: no preference pairs in the {split} split")
    spec, dev = config.model, device()
    dtype = resolve_dtype(spec.precision, dev)
    tokenizer = load_tokenizer(
        model_path, revision=spec.revision, trust_remote_code=spec.trust_remote_code
    )
    sides = [
        [[*r["input"]["messages"], *r[key]] for r in pairs]
        for key in ("preferred_output", "non_preferred_output")
    ]
    options = {"batch_size": config.eval.batch_size, "max_length": config.data.max_length}
    model = load_trained(model_path, config, train_dir, dtype, dev)
    found = {"tuned": reward_margins(model, tokenizer, *sides, **options)}
    if config.eval.compare_base and is_peft(config.method):
        with model.disable_adapter():
            found["base"] = reward_margins(model, tokenizer, *sides, **options)
    elif config.eval.compare_base:
        del model  # the base has an untrained score head: the chance-level reference
        base = load_base(model_path, config, dtype, dev)
        found["base"] = reward_margins(base, tokenizer, *sides, **options)
    metrics = {
        name: {
            "pairwise_accuracy": round(sum(m > 0 for m in values) / len(values), 4),
            "mean_margin": round(sum(values) / len(values), 4),
        }
        for name, values in found.items()
    }
    report = {"samples": len(pairs), "split": split, "metrics": metrics, "values": metrics}
    with open(out_dir / "predictions.jsonl", "w", encoding="utf-8") as handle:
        for index, record in enumerate(pairs):
            row = {"id": record["id"], **{f"{n}_margin": v[index] for n, v in found.items()}}
            handle.write(json.dumps(row) + "\n")
    return report


def reward_margins(
    model: Any,
    tokenizer: Any,
    chosen: list[list[dict[str, Any]]],
    rejected: list[list[dict[str, Any]]],
    *,
    batch_size: int,
    max_length: int | None,
) -> list[float]:
    """Score of each chosen conversation minus that of its rejected one."""
    from tuneforge.train.reward import score_conversations

    good = score_conversations(model, tokenizer, chosen, batch_size, max_length)
    bad = score_conversations(model, tokenizer, rejected, batch_size, max_length)
    return [c - r for c, r in zip(good, bad, strict=True)]
