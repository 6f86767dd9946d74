"""Config loading: unknown keys, wrong types, overrides, YAML errors, path resolution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.cli.main import main
from tuneforge.config import config_hash, load_config
from tuneforge.errors import ConfigError

GOOD = """\
name: demo
seed: 7
model:
  name_or_path: tiny
data:
  path: data/x.jsonl
train:
  lr: 1.0e-3
  batch_size: 4
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_valid_config_fills_defaults_and_resolves_paths(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.seed == 7
    assert config.train.lr == 1e-3
    assert config.train.grad_accum == 1
    assert config.method.kind == "lora"
    assert config.data.path == str((tmp_path / "data" / "x.jsonl").resolve())


def test_unknown_key_names_line_and_suggests(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, GOOD.replace("  lr:", "  lrr:")))
    assert (
        str(caught.value)
        == f"{tmp_path / 'cfg.yaml'}:8: train: unknown key 'lrr'; did you mean 'lr'?"
    )


def test_unknown_top_level_section(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"cfg.yaml:10: top level: unknown key 'trainer'; did you mean 'train'\?"
    ):
        load_config(write(tmp_path, GOOD + "trainer:\n  lr: 1\n"))


def test_wrong_type_names_key_value_and_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, GOOD.replace("batch_size: 4", "batch_size: many")))
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'cfg.yaml'}:9: train.batch_size = 'many':")
    assert "integer" in message
    assert "\n" not in message


def test_missing_required_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data: required key is missing"):
        load_config(write(tmp_path, "name: demo\nmodel:\n  name_or_path: tiny\n"))


def test_override_sets_value_with_type_checking(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD), ["train.lr=5e-4", "train.epochs=2", "seed=3"])
    assert config.train.lr == pytest.approx(5e-4)
    assert config.train.epochs == 2.0
    assert config.seed == 3


def test_override_can_create_a_missing_section(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD), ["eval.max_new_tokens=9"])
    assert config.eval.max_new_tokens == 9


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.lx=1", "--set train.lx=1: unknown key 'lx' in train; did you mean 'lr'?"),
        (
            "trian.lr=1",
            "--set trian.lr=1: unknown key 'trian' in the top level; did you mean 'train'?",
        ),
        ("train.lr", "--set 'train.lr': expected KEY=VALUE, e.g. --set train.lr=1e-4"),
        ("seed.x=1", "--set seed.x=1: seed has no sub-keys"),
    ],
)
def test_bad_override_key(tmp_path: Path, override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, GOOD), [override])
    assert str(caught.value) == expected


def test_bad_override_value_names_the_override(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--set train.lr=fast: train.lr = 'fast': .*number"):
        load_config(write(tmp_path, GOOD), ["train.lr=fast"])


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"cfg.yaml:5: YAML syntax error: .* \(in the block that starts on line 4\)$",
    ):
        load_config(
            write(tmp_path, "name: demo\nmodel:\n  name_or_path: tiny\n  bad: [1, 2\ndata: {}\n")
        )


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a mapping of sections at the top, got list"):
        load_config(write(tmp_path, "- 1\n- 2\n"))


def test_fraction_cross_check(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"val_fraction \+ test_fraction must stay below 0\.9"):
        load_config(write(tmp_path, GOOD), ["data.val_fraction=0.5", "data.test_fraction=0.5"])


def test_config_hash_is_stable_and_sensitive(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    assert config_hash(load_config(path)) == config_hash(load_config(path))
    assert config_hash(load_config(path)) != config_hash(load_config(path, ["seed=8"]))


def test_cli_validate_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD)
    assert main(["config", "validate", str(path)]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["config", "validate", str(path), "--set", "train.lrr=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --set train.lrr=1: unknown key 'lrr' in train; did you mean 'lr'?"
    assert main(["config", "validate"]) == 2  # usage error


def test_cli_schema_is_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert set(schema["properties"]) >= {
        "name",
        "seed",
        "model",
        "data",
        "method",
        "objective",
        "train",
        "eval",
        "export",
    }
    assert schema["required"] == ["name", "model", "data"]
