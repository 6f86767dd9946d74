"""Run directories written by hand, as the pipeline writes them: for tests that read runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TRAIN = {
    "method": "lora",
    "objective": "sft",
    "steps": 3,
    "val_loss_before": 2.5,
    "val_loss_after": 2.0,
    "train_loss_last": 2.1,
    "seconds": 1.5,
    "trained_tokens_per_s": 900.0,
}
EVAL = {
    "samples": 4,
    "split": "test",
    "metric_names": ["exact_match", "rouge_l", "chrf"],
    "values": {
        "tuned": {"exact_match": 0.5, "rouge_l": 0.6, "chrf": 40.0, "loss": 1.9},
        "base": {"exact_match": 0.25, "rouge_l": 0.3, "chrf": 30.0, "loss": 2.4},
    },
    "gates": {
        "passed": False,
        "results": [
            {"gate": "loss <= 1", "metric": "loss", "value": 1.9, "threshold": 1.0}
            | {"passed": False, "margin": -0.9},
        ],
    },
}
STEPS = [
    {"time": 1.0, "stage": "train", "step": 1, "loss": 2.5, "lr": 1e-3, "trained_tokens_per_s": 9},
    {"time": 2.0, "stage": "train", "step": 2, "loss": 2.25, "lr": 1e-3, "trained_tokens_per_s": 8},
    {"time": 2.5, "stage": "train", "step": 2, "val_loss": 2.125},
    {"time": 3.0, "stage": "train", "step": 3, "loss": 2.0, "lr": 5e-4, "trained_tokens_per_s": 7},
    {"time": 4.0, "stage": "eval", "model": "tuned", "exact_match": 0.5},
]


def make_run(
    root: Path,
    label: str,
    *,
    created: str = "2026-11-28T17:57:42+00:00",
    stages: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    steps: list[dict[str, Any]] | None = None,
) -> Path:
    """A run directory with a manifest, config.yaml and metrics.jsonl, as create_run writes."""
    import yaml

    path = root / label
    path.mkdir(parents=True)
    if stages is None:
        stages = {
            "data": {"status": "done", "summary": {"kept": 10}},
            "train": {"status": "done", "summary": dict(TRAIN)},
            "eval": {"status": "done", "summary": json.loads(json.dumps(EVAL))},
        }
    manifest = {
        "tuneforge_version": "0.1.0",
        "created": created,
        "config_hash": "abc",
        "packages": {"torch": "2.13.0"},
        "hardware": {"cpu_count": 2},
        "stages": stages,
    }
    (path / "manifest.json").write_text(json.dumps(manifest))
    config = config or {"name": path.parent.name, "method": {"kind": "lora"}, "objective": "sft"}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    lines = STEPS if steps is None else steps
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path
