"""Pinned loss values: three fp32 training steps of the tiny model, for every method.

The numbers in tests/pinned/losses.json were measured in the environment stored
beside them (torch, transformers, peft, bitsandbytes versions and CPU model).
They catch silent changes to masking, normalisation, initialisation or method
set-up. Where the environment differs (another torch or CPU), the kernels may
round differently, so the test reports that instead of failing on noise;
regenerate with ``TUNEFORGE_REPIN=1 pytest tests/unit/test_pinned_losses.py``.
"""

from __future__ import annotations

import json
import os
import platform
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from transformers import set_seed

from tuneforge.config.schema import Config
from tuneforge.data.render import render_chat_batch
from tuneforge.models.load import load_tokenizer
from tuneforge.train.batching import collate
from tuneforge.train.loop import accumulate_gradients
from tuneforge.train.methods import optimizer_parameters, prepare_model

PINNED = Path(__file__).resolve().parents[1] / "pinned" / "losses.json"
METHODS = {
    "full": {"kind": "full"},
    "freeze": {"kind": "freeze", "train_layers": 1},
    "lora": {"kind": "lora"},
    "dora": {"kind": "dora"},
    "qlora": {"kind": "qlora"},
    "ia3": {"kind": "ia3"},
    "prompt": {"kind": "prompt", "virtual_tokens": 4},
    "prefix": {"kind": "prefix", "virtual_tokens": 4},
}
CHATS = [
    ("Where is my parcel?", "It left the depot this morning."),
    ("Can I pay later?", "Yes, within thirty days of delivery."),
    ("Do you ship abroad?", "We ship to most countries in Europe."),
]


def environment() -> dict[str, str]:
    packages = ("torch", "transformers", "peft", "bitsandbytes")
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {**{p: version(p) for p in packages}, "cpu": cpu}


def three_steps(model_dir: Path, method: dict) -> list[float]:
    set_seed(0)
    config = Config.model_validate(
        {
            "name": "pin",
            "model": {"name_or_path": str(model_dir)},
            "data": {"path": "x"},
            "method": method,
        }
    )
    tokenizer = load_tokenizer(str(model_dir))
    rows = render_chat_batch(
        tokenizer,
        [
            ([{"role": "user", "content": q}, {"role": "assistant", "content": a}], None)
            for q, a in CHATS
        ],
    )
    batch = collate([r.input_ids for r in rows], [r.labels for r in rows], tokenizer.pad_token_id)
    model = prepare_model(str(model_dir), config, torch.float32, torch.device("cpu"))
    optimizer = torch.optim.AdamW(optimizer_parameters(model, config.method), lr=1e-2)
    accelerator = Accelerator(cpu=True)
    losses = []
    for _ in range(3):
        loss, _, _ = accumulate_gradients(model, [batch], accelerator)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss)
    return losses


@pytest.mark.slow
def test_pinned_losses_of_every_method(tiny_model_dir: Path) -> None:
    measured = {kind: three_steps(tiny_model_dir, spec) for kind, spec in METHODS.items()}
    if os.environ.get("TUNEFORGE_REPIN"):
        PINNED.parent.mkdir(exist_ok=True)
        PINNED.write_text(json.dumps({"environment": environment(), "losses": measured}, indent=2))
    pinned = json.loads(PINNED.read_text())
    for kind, losses in measured.items():
        assert losses[0] != losses[2], f"{kind} did not learn"
    if pinned["environment"] != environment():
        pytest.skip(f"pinned in {pinned['environment']}, running in {environment()}")
    for kind, losses in measured.items():
        assert losses == pytest.approx(pinned["losses"][kind], rel=1e-5), kind
