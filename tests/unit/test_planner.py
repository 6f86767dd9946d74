"""The memory planner: exact parameter counts, exact state bytes, activations near measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from tuneforge.config.schema import Config
from tuneforge.errors import ConfigError
from tuneforge.models import plan_measure, planner
from tuneforge.train import adapters
from tuneforge.train.methods import prepare_model

CPU = torch.device("cpu")
# the shape of the tiny_model_dir fixture (tests/conftest.py)
TINY_SPEC = {
    "vocab_size": 600,
    "hidden_size": 64,
    "num_layers": 2,
    "num_heads": 4,
    "intermediate_size": 128,
}
# Llama-2-7B's dimensions, as its config.json gives them
LLAMA_7B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "num_hidden_layers": 32,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}


def make_config(model_path: str | Path, kind: str = "lora", **sections) -> Config:
    method = {"kind": kind, **({"train_layers": 1} if kind == "freeze" else {})}
    return Config(
        name="plan",
        model={"name_or_path": str(model_path), **sections.pop("model", {})},
        data={"path": "unused", **sections.pop("data", {})},
        method={**method, **sections.pop("method", {})},
        **sections,
    )


@pytest.fixture(scope="module")
def llama_7b_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with only a 7B config.json: planning needs no weights."""
    folder = tmp_path_factory.mktemp("llama-7b")
    (folder / "config.json").write_text(json.dumps(LLAMA_7B))
    return folder


@pytest.mark.parametrize("kind", planner.KINDS)
def test_counts_equal_the_prepared_model(tiny_model_dir: Path, kind: str) -> None:
    config = make_config(tiny_model_dir, kind)
    plan = planner.estimate(config, planner.model_config(config), torch.float32)
    trainable, total = adapters.parameter_counts(
        prepare_model(str(tiny_model_dir), config, torch.float32, CPU)
    )
    assert plan.trainable_params == trainable
    if kind == "qlora":  # 4-bit weights are stored two to a byte; the plan counts weights
        lora = prepare_model(str(tiny_model_dir), make_config(tiny_model_dir), torch.float32, CPU)
        total = adapters.parameter_counts(lora)[1]
    assert plan.total_params == total


def test_the_tiny_name_plans_the_model_its_spec_builds(tiny_model_dir: Path, tmp_path) -> None:
    # nothing is built under runs_dir: the config comes from the builder, not a folder
    config = make_config("tiny", "full", model={"tiny": TINY_SPEC}, runs_dir=str(tmp_path))
    assert planner.tiny_base_dir(config) is None
    plan = planner.estimate(config, planner.model_config(config), torch.float32)
    real = prepare_model(
        str(tiny_model_dir), make_config(tiny_model_dir, "full"), torch.float32, CPU
    )
    assert plan.total_params == plan.trainable_params == adapters.parameter_counts(real)[1]


def test_full_fp32_training_state_is_16_bytes_per_parameter(tiny_model_dir: Path) -> None:
    config = make_config(tiny_model_dir, "full", model={"precision": "fp32"})
    plan = planner.estimate(config, planner.model_config(config), torch.float32)
    # weights 4 + gradients 4 + AdamW's two moments 8; no fp32 master copy
    assert plan.weights + plan.gradients + plan.optimizer == 16 * plan.total_params


def test_bf16_state_stays_in_the_parameters_dtype(llama_7b_dir: Path) -> None:
    config = make_config(llama_7b_dir, "full")
    plan = planner.estimate(config, planner.model_config(config), torch.bfloat16)
    assert plan.total_params == 6_738_415_616  # Llama-2-7B
    assert plan.weights == plan.gradients == 2 * plan.total_params
    assert plan.optimizer == 4 * plan.total_params


@pytest.mark.parametrize(
    ("kind", "dropout"),
    [
        pytest.param("full", 0.05, marks=pytest.mark.slow),
        ("lora", 0.05),
        pytest.param("qlora", 0.0, marks=pytest.mark.slow),
    ],
)
def test_activation_estimate_is_near_the_measured_peak(
    tiny_model_dir: Path, kind: str, dropout: float
) -> None:
    config = make_config(
        tiny_model_dir,
        kind,
        model={"precision": "fp32"},
        data={"max_length": 128},
        method={"dropout": dropout},
        train={"batch_size": 4},
    )
    hf_config = planner.model_config(config)
    measured = plan_measure.measure(config, hf_config)
    plan = planner.estimate(config, hf_config, measured.dtype, on_gpu=False)
    assert 0.5 <= plan.activations / measured.activations <= 2.0
    assert plan.gradients == measured.gradients
    assert 0.5 <= plan.total / measured.peak <= 2.0
    assert measured.step_seconds > 0


def test_gradient_checkpointing_keeps_less(tiny_model_dir: Path) -> None:
    config = make_config(tiny_model_dir, "full")
    hf_config = planner.model_config(config)
    plain = planner.estimate(config, hf_config, torch.bfloat16)
    config.train.gradient_checkpointing = True
    assert planner.estimate(config, hf_config, torch.bfloat16).activations < plain.activations


def test_7b_on_24gb_full_fp32_does_not_fit_qlora_does(llama_7b_dir: Path) -> None:
    gib = planner.gpu_gib("24GB")
    full = make_config(llama_7b_dir, "full", model={"precision": "fp32"})
    plan = planner.estimate(full, planner.model_config(full), torch.float32)
    assert plan.weights + plan.gradients + plan.optimizer == 16 * plan.total_params
    assert planner.fit(plan.total, gib)[0] is False
    qlora = make_config(llama_7b_dir, "qlora", train={"gradient_checkpointing": True})
    plan = planner.estimate(qlora, planner.model_config(qlora), torch.bfloat16)
    assert 0.5 < plan.weights / plan.total_params < 0.7  # 4-bit layers, fp32 embeddings
    assert planner.fit(plan.total, gib)[0] is True


@pytest.mark.parametrize(
    ("name", "gib"),
    [("24GB", 24.0), ("80", 80.0), ("40 GiB", 40.0), ("h100", 79.6), ("A100-80GB", 80.0)],
)
def test_gpu_sizes_and_names(name: str, gib: float) -> None:
    assert planner.gpu_gib(name) == gib


def test_an_unknown_gpu_names_the_value() -> None:
    with pytest.raises(ConfigError, match="--gpu 'V100X'"):
        planner.gpu_gib("V100X")


def test_fit_leaves_room_for_the_cuda_context() -> None:
    assert planner.fit(int(22.5 * planner.GIB), 24.0) == (
        True,
        "tight: 0.5 GiB left, fragmentation may not fit",
    )
    assert planner.fit(int(23.5 * planner.GIB), 24.0)[0] is False


def test_rows_per_epoch_from_max_samples(tmp_path: Path) -> None:
    config = make_config("tiny", runs_dir=str(tmp_path), data={"max_samples": 1000})
    assert planner.train_rows(config) == (800, "data.max_samples")
    config.data.max_samples = None
    assert planner.train_rows(config)[0] is None


def write_config(folder: Path, model: Path, **sections) -> Path:
    path = folder / "plan.yaml"
    raw = {"name": "plan", "model": {"name_or_path": str(model)}, "data": {"path": "x.jsonl"}}
    path.write_text(yaml.safe_dump({**raw, **sections}))
    return path


@pytest.mark.slow
def test_cli_says_what_fits_a_24gb_gpu(cli, llama_7b_dir: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, llama_7b_dir, train={"gradient_checkpointing": True})
    result = cli("plan", str(config), "--gpu", "24GB", "--set", "method.kind=qlora", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[1]: line for line in result.stdout.splitlines() if line.count("│") > 5}
    assert "no (short by" in rows["full"]
    assert "yes (" in rows["qlora"]
    assert "Measured" not in result.stdout  # no weights in the folder: nothing to measure


@pytest.mark.slow
def test_cli_measures_a_local_model(cli, tiny_model_dir: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, tiny_model_dir, data={"path": "x.jsonl", "max_length": 64})
    result = cli("plan", str(config), "--gpu", "L4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Measured: 3 training steps on cpu" in result.stdout
    assert "time per epoch: unknown" in result.stdout


@pytest.mark.slow
def test_cli_refuses_an_unknown_gpu(cli, tiny_model_dir: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, tiny_model_dir)
    result = cli("plan", str(config), "--gpu", "huge", "--no-measure", cwd=tmp_path)
    assert result.returncode == 2
    assert "--gpu 'huge': expected a size like 24GB" in result.stderr
