"""DPO holds one copy of the base weights: the reference is the model before step 0."""

from __future__ import annotations

import gc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import PreTrainedModel

import tuneforge.train.loop as loop
from tuneforge.config.schema import Config
from tuneforge.data.render import render_chat
from tuneforge.models.load import load_tokenizer
from tuneforge.train.recipes import train


def write_pairs(folder: Path, tokenizer) -> None:
    (folder / "pairs").mkdir(parents=True)
    for split, count in (("train", 8), ("val", 4)):
        rows: dict[str, list] = {"id": [], "margin": []}
        for index in range(count):
            prompt = [{"role": "user", "content": f"Question {index}: which colour is the sky?"}]
            for side, reply in (("chosen", "It is blue."), ("rejected", "No.")):
                done = render_chat(
                    tokenizer, [*prompt, {"role": "assistant", "content": reply}],
                    train_on="last_assistant",
                )  # fmt: skip
                rows.setdefault(f"{side}_input_ids", []).append(done.input_ids)
                rows.setdefault(f"{side}_labels", []).append(done.labels)
            rows["id"].append(f"{split}-{index}")
            rows["margin"].append(0.0)
        pq.write_table(pa.table(rows), folder / "pairs" / f"{split}.parquet")


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_dpo_trains_with_one_live_model(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    write_pairs(tmp_path / "data", load_tokenizer(str(tiny_model_dir)))
    seen: list[int] = []
    real_loop = loop.run_loop

    def counting_loop(session: loop.Session) -> bool:
        gc.collect()
        models = [o for o in gc.get_objects() if isinstance(o, PreTrainedModel)]
        seen.append(sum(type(m).__name__.endswith("ForCausalLM") for m in models))
        return real_loop(session)

    monkeypatch.setattr(loop, "run_loop", counting_loop)
    config = Config(
        name="t",
        model={"name_or_path": str(tiny_model_dir)},
        data={"path": str(tmp_path / "x.jsonl")},
        objective="dpo",
        method={"kind": kind},
        train={"max_steps": 2, "batch_size": 4},
    )
    summary = train(
        config, str(tiny_model_dir), tmp_path / "data", tmp_path / "out",
        checkpoints=tmp_path / "checkpoints", key="k",
    )  # fmt: skip
    assert seen == [1]  # the policy only: no reference copy, for adapters or full training
    assert summary["val_loss_before"] == pytest.approx(0.693147, abs=1e-5)
    assert (tmp_path / "checkpoints" / "reference.safetensors").is_file()
