"""Pickle weights are never loaded: a malicious checkpoint is refused and its code never runs."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

from tuneforge.cli.main import main
from tuneforge.errors import ModelError
from tuneforge.models.load import load_model
from tuneforge.models.local import check_local_model_dir
from tuneforge.train.adapters import check_adapter_dir

REPO = Path(__file__).resolve().parents[2]


class Payload:
    """Unpickling this creates ``marker``: proof that code in the checkpoint ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def poisoned(folder: Path, name: str, marker: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(pickle.dumps(Payload(marker)))
    return folder


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "code inside a pickle checkpoint ran"


def test_the_payload_does_run_when_unpickled(tmp_path: Path) -> None:
    """The control: the file really is malicious, so the refusals below mean something."""
    probe = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(probe)))  # our own bytes, to show the payload is real
    assert probe.exists()


def test_a_pickle_model_folder_is_refused(tmp_path: Path, marker: Path, tiny_model_dir) -> None:
    folder = poisoned(tmp_path / "model", "pytorch_model.bin", marker)
    shutil.copy(tiny_model_dir / "config.json", folder / "config.json")
    with pytest.raises(ModelError, match=r"pytorch_model\.bin: pickle weights are refused"):
        check_local_model_dir(folder)
    with pytest.raises(ModelError):
        load_model(str(folder))


def test_safetensors_win_over_a_pickle_beside_them(
    tmp_path: Path, marker: Path, tiny_model_dir: Path
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    poisoned(folder, "pytorch_model.bin", marker)
    model = load_model(str(folder))
    assert model.config.vocab_size == json.loads((folder / "config.json").read_text())["vocab_size"]


def test_a_pickle_adapter_is_refused(tmp_path: Path, marker: Path) -> None:
    folder = poisoned(tmp_path / "adapter", "adapter_model.bin", marker)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(ModelError, match="safetensors"):
        check_adapter_dir(folder)


def test_the_cli_refuses_before_any_run_starts(
    tmp_path: Path, marker: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = poisoned(tmp_path / "model", "pytorch_model.bin", marker)
    shutil.copy(tiny_model_dir / "config.json", folder / "config.json")
    config = tmp_path / "c.yaml"
    config.write_text(
        f"name: c\nruns_dir: {tmp_path / 'runs'}\nmodel:\n  name_or_path: {folder}\n"
        f"data:\n  path: {REPO / 'examples/data/support_tickets.jsonl'}\n"
    )
    assert main(["run", str(config)]) == 2
    assert "pickle weights are refused" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
