"""Merging: every adapter method folds into the base exactly, twice the same, ties kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tests.unit.test_methods import batch, make_config, train_steps
from transformers import AutoModelForCausalLM, AutoTokenizer

from tuneforge.export.formats import export_model, write_checksums
from tuneforge.export.hf import MERGE_TOLERANCE, stop_token_ids, write_merged
from tuneforge.runs.hashing import file_sha256
from tuneforge.train.methods import load_trained, optimizer_parameters, prepare_model, save_trained

CPU = torch.device("cpu")
MERGEABLE = {"lora": {}, "dora": {}, "ia3": {}, "qlora": {}}


def trained(tiny_model_dir: Path, tmp_path: Path, kind: str, **extra) -> tuple:
    """A config and a train folder whose adapter moved away from its no-op start."""
    config = make_config(tiny_model_dir, kind=kind, **MERGEABLE.get(kind, {}), **extra)
    model = prepare_model(str(tiny_model_dir), config, torch.float32, CPU)
    train_steps(model, optimizer_parameters(model, config.method), steps=3)
    train_dir = tmp_path / "train"
    save_trained(model, config.method, train_dir)
    return config, train_dir


@torch.no_grad()
def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids).logits


@pytest.mark.parametrize("kind", sorted(MERGEABLE))
def test_merged_logits_equal_base_plus_adapter(
    kind: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    config, train_dir = trained(tiny_model_dir, tmp_path, kind)
    reference = load_trained(str(tiny_model_dir), config, train_dir, torch.float32, CPU)
    summary = write_merged(config, str(tiny_model_dir), train_dir, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    ids = batch(7)
    assert summary["merge_max_abs_diff"] <= MERGE_TOLERANCE
    assert (logits(merged, ids) - logits(reference, ids)).abs().max() <= MERGE_TOLERANCE
    assert (logits(merged, ids) - logits(base, ids)).abs().max() > 1e-3  # the tune did something
    assert not any(
        "lora" in k or "ia3" in k for k in load_file(tmp_path / "merged/model.safetensors")
    )


def test_qlora_merges_onto_the_base_it_trained_with(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The dequantized 4-bit base reproduces the trained model; the original weights do not."""
    config, train_dir = trained(tiny_model_dir, tmp_path, "qlora")
    reference = load_trained(str(tiny_model_dir), config, train_dir, torch.float32, CPU)
    ids = batch(3)
    found = {}
    for base in ("dequantized", "original"):
        config.export.qlora_base = base
        write_merged(config, str(tiny_model_dir), train_dir, tmp_path / base)
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / base, dtype=torch.float32)
        found[base] = float((logits(merged, ids) - logits(reference, ids)).abs().max())
    assert found["dequantized"] <= 1e-5 < 1e-3 < found["original"]


def test_merging_is_idempotent_and_keeps_tied_embeddings(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    config, train_dir = trained(tiny_model_dir, tmp_path, "lora")
    for name in ("a", "b"):
        write_merged(config, str(tiny_model_dir), train_dir, tmp_path / name)
    weights = [tmp_path / name / "model.safetensors" for name in ("a", "b")]
    assert file_sha256(weights[0]) == file_sha256(weights[1])
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "a", dtype=torch.float32)
    assert merged.config.tie_word_embeddings
    assert merged.lm_head.weight.data_ptr() == merged.model.embed_tokens.weight.data_ptr()
    # a merged model has no adapter left: merging it again changes nothing
    again = merged.merge_and_unload() if hasattr(merged, "merge_and_unload") else merged
    assert torch.equal(logits(again, batch(1)), logits(merged, batch(1)))


def test_merged_folder_stops_where_training_stopped(tiny_model_dir: Path, tmp_path: Path) -> None:
    config, train_dir = trained(tiny_model_dir, tmp_path, "lora")
    config.export.dtype = "bfloat16"
    summary = write_merged(config, str(tiny_model_dir), train_dir, tmp_path / "m")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "m")
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    saved = json.loads((tmp_path / "m" / "generation_config.json").read_text())
    eos = saved["eos_token_id"]
    assert end_of_turn in (eos if isinstance(eos, list) else [eos])
    assert summary["eos_token_ids"] == sorted(eos if isinstance(eos, list) else [eos])
    assert set(stop_token_ids(tokenizer)) <= set(summary["eos_token_ids"])
    assert summary["dtype"] == "bfloat16"
    assert json.loads((tmp_path / "m" / "config.json").read_text())["dtype"] == "bfloat16"
    assert "<|im_end|>" in tokenizer.chat_template


def test_formats_and_checksums(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Only the asked-for formats; no scratch merged folder left; SHA256SUMS covers the rest."""
    config, train_dir = trained(tiny_model_dir, tmp_path, "lora")
    config.export.formats = ["adapter"]
    out = tmp_path / "export"
    out.mkdir()
    summary = export_model(config, str(tiny_model_dir), train_dir, out, {"base_model": "tiny"})
    assert summary["formats"] == ["adapter"] and summary["adapter"] == "adapter"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "adapter"]
    sums = write_checksums(out).read_text().splitlines()
    assert {line.split("  ", 1)[1] for line in sums} == {
        str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != "SHA256SUMS"
    }
    pairs = [line.split("  ", 1) for line in sums]
    assert all(file_sha256(out / name) == digest for digest, name in pairs)
