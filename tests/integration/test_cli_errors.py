"""Bad input through the real CLI: one line, exit 2, no traceback, nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def make_project(tmp_path: Path, model: str, data_lines: list[str] | None, extra: str = "") -> Path:
    if data_lines is not None:
        (tmp_path / "data.jsonl").write_text("".join(line + "\n" for line in data_lines))
    config = tmp_path / "cfg.yaml"
    config.write_text(
        f"name: bad\nruns_dir: {tmp_path / 'runs'}\nmodel:\n  name_or_path: {model}\n"
        f"data:\n  path: data.jsonl\n{extra}"
    )
    return config


def assert_one_line_error(result, *fragments: str) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def assert_no_stage_output(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    if not runs.exists():
        return
    for run in runs.glob("*/*"):
        assert sorted(p.name for p in run.iterdir()) == [
            "config.yaml",
            "manifest.json",
            "metrics.jsonl",
        ]
        assert json.loads((run / "manifest.json").read_text())["stages"] == {}


def test_missing_config_file(cli, tmp_path: Path) -> None:
    result = cli("run", "nope.yaml", cwd=tmp_path)
    assert_one_line_error(result, "nope.yaml: config file not found")


def test_yaml_syntax_error_names_the_line(cli, tmp_path: Path) -> None:
    (tmp_path / "cfg.yaml").write_text("name: x\nmodel:\n  name_or_path: [tiny\ndata:\n  path: d\n")
    assert_one_line_error(cli("run", "cfg.yaml", cwd=tmp_path), "cfg.yaml:4: YAML syntax error")


def test_unknown_key_is_named_with_a_suggestion(cli, tmp_path: Path) -> None:
    config = make_project(tmp_path, "tiny", [json.dumps(CHAT)], "train:\n  epoch: 2\n")
    assert_one_line_error(
        cli("run", config.name, cwd=tmp_path),
        "cfg.yaml:8: train: unknown key 'epoch'; did you mean 'epochs'?",
    )


def test_wrong_type_and_bad_override(cli, tmp_path: Path) -> None:
    config = make_project(tmp_path, "tiny", [json.dumps(CHAT)], "train:\n  epochs: lots\n")
    assert_one_line_error(
        cli("run", config.name, cwd=tmp_path), "cfg.yaml:8: train.epochs = 'lots'"
    )
    config = make_project(tmp_path, "tiny", [json.dumps(CHAT)])
    result = cli("train", config.name, "--set", "train.batch_size=0", cwd=tmp_path)
    assert_one_line_error(result, "--set train.batch_size=0: train.batch_size = 0")


def test_missing_dataset_file(cli, tmp_path: Path, tiny_model_dir: Path) -> None:
    config = make_project(tmp_path, str(tiny_model_dir), None)
    assert_one_line_error(
        cli("data", "prepare", config.name, cwd=tmp_path), "data.jsonl': file not found"
    )
    assert_no_stage_output(tmp_path)


def test_empty_dataset(cli, tmp_path: Path, tiny_model_dir: Path) -> None:
    config = make_project(tmp_path, str(tiny_model_dir), [])
    assert_one_line_error(
        cli("data", "prepare", config.name, cwd=tmp_path), "no records in the file"
    )
    assert_no_stage_output(tmp_path)


def test_dataset_without_assistant_turns(cli, tmp_path: Path, tiny_model_dir: Path) -> None:
    lines = [json.dumps({"messages": [{"role": "user", "content": f"q{i}"}]}) for i in range(3)]
    config = make_project(tmp_path, str(tiny_model_dir), lines)
    assert_one_line_error(
        cli("run", config.name, cwd=tmp_path), "no usable samples (3 x no assistant turn)"
    )
    assert_no_stage_output(tmp_path)


def test_model_folder_without_safetensors(cli, tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    config = make_project(tmp_path, "./pickled", [json.dumps(CHAT)])
    assert_one_line_error(
        cli("run", config.name, cwd=tmp_path),
        "no *.safetensors weights (found pytorch_model.bin: pickle weights are refused)",
    )
    assert_no_stage_output(tmp_path)


def test_unreachable_hub_id_suggests_a_local_path(cli, tmp_path: Path) -> None:
    config = make_project(tmp_path, "someorg/some-model", [json.dumps(CHAT)])
    assert_one_line_error(
        cli("data", "prepare", config.name, cwd=tmp_path),
        "'someorg/some-model': not a local directory and not loadable from the Hugging Face Hub",
        "set model.name_or_path to DIR",
    )
    assert_no_stage_output(tmp_path)


def test_stage_needs_its_upstream(cli, tmp_path: Path, tiny_model_dir: Path) -> None:
    config = make_project(tmp_path, str(tiny_model_dir), [json.dumps(CHAT)] * 4)
    assert_one_line_error(
        cli("train", config.name, cwd=tmp_path),
        "stage 'data' has not run for this config",
        "run `tuneforge data prepare cfg.yaml` first",
    )


def test_usage_error_exits_2(cli, tmp_path: Path) -> None:
    result = cli("run", cwd=tmp_path)
    assert result.returncode == 2
    assert "Missing argument" in result.stderr


@pytest.mark.parametrize("args", [["--version"], ["config", "schema"]])
def test_simple_commands_succeed(cli, tmp_path: Path, args) -> None:
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
