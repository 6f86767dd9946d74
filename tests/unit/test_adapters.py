"""Several named adapters on one base: load, list, switch, combine, save; safe names; the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from tests_support import run_cli
from tuneforge.config.schema import Config
from tuneforge.errors import ConfigError, ModelError
from tuneforge.models.load import load_model
from tuneforge.train import adapters
from tuneforge.train.methods import prepare_model, save_trained

CPU = torch.device("cpu")
IDS = torch.randint(4, 600, (2, 10), generator=torch.Generator().manual_seed(0))


def lora_config(model_dir: Path, name: str, **method) -> Config:
    spec = {"kind": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "adapter_name": name, **method}
    return Config(
        name="t", model={"name_or_path": str(model_dir)}, data={"path": "unused"}, method=spec
    )


@pytest.fixture(scope="module")
def two_adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two saved LoRA adapters with random (non-zero) B matrices, so both change outputs."""
    root = tmp_path_factory.mktemp("adapters")
    folders = {}
    for seed, name in enumerate(("alpha", "beta")):
        config = lora_config(tiny_model_dir, name)
        model = prepare_model(str(tiny_model_dir), config, torch.float32, CPU)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param_name, param in model.named_parameters():
                if "lora_B" in param_name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
        save_trained(model, config.method, root / name)
        folders[name] = root / name / "adapter"
    return folders


def base_model(model_dir: Path) -> torch.nn.Module:
    return load_model(str(model_dir), dtype=torch.float32)


@torch.no_grad()
def logits(model: torch.nn.Module) -> torch.Tensor:
    model.eval()
    return model(input_ids=IDS).logits


@pytest.mark.parametrize(
    "name", ["../evil", "a/b", "..", "", ".hidden", "-x", "x" * 65, "has space", "lora", "a"]
)
def test_unsafe_or_ambiguous_names_are_rejected(name: str) -> None:
    with pytest.raises(ConfigError, match="adapter name"):
        adapters.check_adapter_name(name)


def test_plain_names_are_accepted() -> None:
    for name in ("default", "task-1_b", "B2", "x" * 64):
        assert adapters.check_adapter_name(name) == name


def test_path_traversal_names_never_reach_the_disk(
    tiny_model_dir: Path, two_adapters: dict, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=re.escape("'../evil'")):
        adapters.load_adapters(base_model(tiny_model_dir), {"../evil": two_adapters["alpha"]})
    model = adapters.load_adapters(base_model(tiny_model_dir), {"alpha": two_adapters["alpha"]})
    with pytest.raises(ConfigError, match=re.escape("'../evil'")):
        adapters.save_adapter(model, tmp_path / "out", "../evil")
    with pytest.raises(ConfigError, match=re.escape("'../mix'")):
        adapters.combine_adapters(model, ["alpha"], [1.0], "../mix")
    assert not (tmp_path / "evil").exists() and not (tmp_path / "out").exists()


def test_saved_adapters_are_flat_safetensors_folders(two_adapters: dict) -> None:
    folder = two_adapters["alpha"]
    assert (folder / "adapter_model.safetensors").is_file()
    assert (folder / "adapter_config.json").is_file()
    assert not (folder / "alpha").exists() and not list(folder.rglob("*.bin"))


def test_pickle_only_adapter_folders_are_refused(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.bin").write_bytes(b"never unpickled")
    with pytest.raises(ModelError, match=r"no adapter_model\.safetensors"):
        adapters.check_adapter_dir(tmp_path)


def test_load_list_switch_and_combine(tiny_model_dir: Path, two_adapters: dict) -> None:
    base_logits = logits(base_model(tiny_model_dir))
    alone = {
        name: logits(adapters.load_adapter(base_model(tiny_model_dir), folder, name=name))
        for name, folder in two_adapters.items()
    }
    model = adapters.load_adapters(base_model(tiny_model_dir), two_adapters)
    assert adapters.list_adapters(model) == ["alpha", "beta"]
    assert torch.allclose(logits(model), alone["alpha"], atol=1e-5)  # first loaded is active
    adapters.switch_adapter(model, "beta")
    assert torch.allclose(logits(model), alone["beta"], atol=1e-5)
    assert (alone["alpha"] - alone["beta"]).abs().max() > 1e-3
    assert (alone["alpha"] - base_logits).abs().max() > 1e-3

    adapters.combine_adapters(model, ["alpha", "beta"], [0.5, 0.5], "mix", "cat")
    assert adapters.list_adapters(model) == ["alpha", "beta", "mix"]
    mixed = logits(model)  # the combination is made active
    assert (mixed - alone["alpha"]).abs().max() > 1e-4
    assert (mixed - alone["beta"]).abs().max() > 1e-4
    # cat is exact: the combined update is the weighted sum of the two updates
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    expected = 0.5 * layer.get_delta_weight("alpha") + 0.5 * layer.get_delta_weight("beta")
    assert torch.allclose(layer.get_delta_weight("mix"), expected, atol=1e-6)

    adapters.combine_adapters(model, ["alpha", "beta"], [0.5, 0.5], "linear-mix", "linear")
    assert adapters.list_adapters(model)[-1] == "linear-mix"
    assert torch.isfinite(logits(model)).all()


def test_combined_adapter_saves_and_reloads(
    tiny_model_dir: Path, two_adapters: dict, tmp_path: Path
) -> None:
    model = adapters.load_adapters(base_model(tiny_model_dir), two_adapters)
    adapters.combine_adapters(model, ["alpha", "beta"], [0.7, 0.3], "mix", "cat")
    expected = logits(model)
    adapters.save_adapter(model, tmp_path / "mix", "mix")
    assert adapters.adapter_info(tmp_path / "mix")["rank"] == 8  # cat stacks the ranks
    reloaded = adapters.load_adapter(base_model(tiny_model_dir), tmp_path / "mix", name="mix")
    assert torch.allclose(logits(reloaded), expected, atol=1e-5)


@pytest.mark.parametrize(
    ("names", "weights", "how", "message"),
    [
        (["alpha", "gamma"], [0.5, 0.5], "cat", "adapter 'gamma': not loaded"),
        (["alpha", "beta"], [1.0], "cat", "one weight per adapter"),
        (["alpha", "beta"], [0.5, 0.5], "svd", "use 'linear' or 'cat'"),
    ],
)
def test_combine_errors_are_one_line(
    tiny_model_dir: Path, two_adapters: dict, names: list, weights: list, how: str, message: str
) -> None:
    model = adapters.load_adapters(base_model(tiny_model_dir), two_adapters)
    with pytest.raises(ConfigError, match=message) as error:
        adapters.combine_adapters(model, names, weights, "mix", how)
    assert "\n" not in str(error.value)


def test_switch_to_an_unknown_adapter_names_the_loaded_ones(
    tiny_model_dir: Path, two_adapters: dict
) -> None:
    model = adapters.load_adapters(base_model(tiny_model_dir), two_adapters)
    with pytest.raises(ConfigError, match=r"'gamma': not loaded \(loaded: alpha, beta\)"):
        adapters.switch_adapter(model, "gamma")


def test_prefix_adapter_is_used_by_generate(tiny_model_dir: Path) -> None:
    config = lora_config(tiny_model_dir, "steer", kind="prefix", virtual_tokens=4)
    model = prepare_model(str(tiny_model_dir), config, torch.float32, CPU)
    model.eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:  # the prefix only
                param.mul_(20)  # strong enough to change greedy choices
        generated = model.generate(input_ids=IDS, max_new_tokens=4, do_sample=False)[:, 10:]
        greedy = IDS
        for _ in range(4):
            step = model(input_ids=greedy).logits[:, -1].argmax(-1, keepdim=True)
            greedy = torch.cat([greedy, step], dim=1)
        with model.disable_adapter():
            plain = model.generate(input_ids=IDS, max_new_tokens=4, do_sample=False)[:, 10:]
    assert torch.equal(generated, greedy[:, 10:])
    assert not torch.equal(generated, plain)


def test_cli_lists_adapter_folders(two_adapters: dict, tmp_path: Path) -> None:
    result = run_cli("adapters", "list", str(two_adapters["alpha"]), cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if "lora" in line)
    assert str(two_adapters["alpha"]) in row
    assert "│    4 │" in row  # rank
    assert "down_proj,gate_proj,k_proj,o_proj,q_proj,up_proj,v_proj" in row
    assert "KiB" in row
    config = json.loads((two_adapters["alpha"] / "adapter_config.json").read_text())
    assert config["r"] == 4


def test_cli_list_error_is_one_line(tmp_path: Path) -> None:
    result = run_cli("adapters", "list", str(tmp_path / "missing"), cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "directory not found" in result.stderr


@pytest.mark.slow
def test_cli_combines_two_adapters(
    tiny_model_dir: Path, two_adapters: dict, tmp_path: Path
) -> None:
    args = ["adapters", "combine", "--base", str(tiny_model_dir), "--out", str(tmp_path / "mix")]
    for name, folder in two_adapters.items():
        args += ["--adapter", f"{name}={folder}"]
    result = run_cli(*args, "--weights", "0.5,0.5", "--type", "cat", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    info = adapters.adapter_info(tmp_path / "mix")
    assert info["kind"] == "lora" and info["rank"] == 8
    bad = run_cli(*args, "--weights", "0.5", cwd=tmp_path, timeout=300)
    assert bad.returncode == 2 and "--weights '0.5': 1 weights for 2 adapters" in bad.stderr
