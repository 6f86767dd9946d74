"""The RLHF example, SFT -> reward model -> GRPO, as one `tuneforge run` (as documented)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests_support import run_cli

REPO = Path(__file__).resolve().parents[2]
CONFIGS = [REPO / "examples" / "rlhf" / f"{name}.yaml" for name in ("sft", "reward", "grpo")]
SMALLER = [  # the same pipeline, shortened for CI; --set applies to all three configs
    # the tiny base is the example's own (300 pre-training steps): the quickstart's, which
    # the session's tiny-model cache (tests/conftest.py) holds once either has built it
    "train.max_steps=24",
    "eval.max_samples=16",
    "rl.eval_prompts=24",
]


def summary(runs: Path, name: str, stage: str = "train") -> dict:
    (run,) = (runs / name).iterdir()
    return json.loads((run / "manifest.json").read_text())["stages"][stage]["summary"]


@pytest.mark.slow
def test_sft_then_reward_model_then_grpo_raises_the_held_out_reward(tmp_path: Path) -> None:
    sets = [part for item in SMALLER for part in ("--set", item)]
    done = run_cli("run", *map(str, CONFIGS), *sets, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = tmp_path / "runs"
    reward = summary(runs, "rlhf-reward", "eval")["metrics"]
    assert reward["tuned"]["mean_margin"] > reward["base"]["mean_margin"]
    grpo = summary(runs, "rlhf-grpo")
    assert grpo["val_reward_after"] > grpo["val_reward_before"]  # the reward model's mean score
    assert 0 < grpo["val_kl_after"] < 1.0  # per token: the policy stayed near the SFT model
    assert (runs / "rlhf-grpo").is_dir() and "exported:" in done.stdout
