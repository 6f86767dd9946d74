"""ONNX export of the tiny merged model, checked by onnxruntime against transformers."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from tuneforge.errors import StageFailed
from tuneforge.export.onnx import LOGITS_TOLERANCE, ONNX_FILE, verify_onnx, write_onnx

onnxruntime = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def exported(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("onnx")
    return out, write_onnx(tiny_model_dir, out)


def test_the_folder_is_self_contained(exported, tiny_model_dir: Path) -> None:
    out, summary = exported
    assert summary["inputs"] == ["input_ids", "attention_mask", "position_ids"]
    assert summary["outputs"] == ["logits"]
    assert summary["kv_cache"] is False
    assert {"config.json", "generation_config.json", "tokenizer.json"} <= set(summary["files"])
    assert not list(out.glob("*.safetensors"))
    onnx.checker.check_model(str(out / ONNX_FILE))  # a valid graph, weights found beside it
    ours, theirs = AutoTokenizer.from_pretrained(out), AutoTokenizer.from_pretrained(tiny_model_dir)
    chat = [{"role": "user", "content": "Where is my parcel?"}]
    assert ours("Hello there.")["input_ids"] == theirs("Hello there.")["input_ids"]
    assert ours.apply_chat_template(chat, tokenize=False) == theirs.apply_chat_template(
        chat, tokenize=False
    )


def test_logits_match_transformers_on_a_padded_batch(exported, tiny_model_dir: Path) -> None:
    out, _ = exported
    numbers = verify_onnx(out, tiny_model_dir)
    assert numbers["tolerance"] == LOGITS_TOLERANCE == 1e-4
    assert len(set(numbers["prompt_tokens"])) == 3  # three lengths, so two rows are padded
    assert numbers["max_abs_diff_padded"] < 1e-5
    assert numbers["max_abs_diff_unpadded"] < 1e-5
    assert numbers["greedy_steps"] == 8 and numbers["greedy_tokens_equal"]


@pytest.mark.parametrize(("batch", "length"), [(1, 1), (4, 37)])
def test_batch_and_sequence_axes_are_dynamic(exported, tiny_model_dir, batch, length) -> None:
    out, _ = exported
    session = onnxruntime.InferenceSession(str(out / ONNX_FILE), providers=["CPUExecutionProvider"])
    ids = torch.randint(4, 500, (batch, length), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    positions = torch.arange(length).expand(batch, length)
    feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
    (logits,) = session.run(["logits"], {k: v.numpy().astype(np.int64) for k, v in feeds.items()})
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        expected = model(input_ids=ids).logits.numpy()
    assert logits.shape == expected.shape == (batch, length, model.config.vocab_size)
    assert np.abs(logits - expected).max() < 1e-5


def test_a_graph_that_disagrees_fails_verification(exported, tiny_model_dir, tmp_path) -> None:
    out, _ = exported
    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    weights = load_file(other / "model.safetensors")
    weights["model.norm.weight"] = weights["model.norm.weight"] * 1.01
    save_file(weights, other / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(StageFailed, match=r"ONNX logits differ from the merged model by") as err:
        verify_onnx(out, other)
    assert "\n" not in str(err.value)
