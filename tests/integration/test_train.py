"""Training through the real CLI: kill -9 and resume, signals, NaN, every method and objective."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests_support import cli_command, cli_env, run_cli

REPO = Path(__file__).resolve().parents[2]
TICKETS = REPO / "examples" / "data" / "support_tickets.jsonl"


def write_config(folder: Path, model: Path, train: str, extra: str = "", samples: int = 80) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "train.yaml"
    config.write_text(
        f"name: t\nruns_dir: {folder / 'runs'}\nseed: 7\n"
        f"model:\n  name_or_path: {model}\n"
        f"data:\n  path: {TICKETS}\n  max_samples: {samples}\n  max_length: 192\n"
        f"train:\n{train}{extra}"
    )
    prepared = run_cli("data", "prepare", config.name, cwd=folder)
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    return config


def run_dir(folder: Path) -> Path:
    (run,) = (folder / "runs" / "t").iterdir()
    return run


def step_losses(run: Path) -> dict[int, float]:
    """The last logged training loss of every step (a resumed run logs steps again)."""
    losses = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("stage") == "train" and "loss" in record:
            losses[record["step"]] = record["loss"]
    return losses


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while not path.is_file():
        assert process.poll() is None, "training ended before the checkpoint appeared"
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


RESUMABLE = "  max_steps: 40\n  batch_size: 2\n  lr: 1.0e-3\n  save_every: 5\n"


@pytest.mark.slow
def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path: Path, tiny_model_dir) -> None:
    whole = write_config(tmp_path / "whole", tiny_model_dir, RESUMABLE)
    assert run_cli("train", whole.name, cwd=whole.parent).returncode == 0
    cut = write_config(tmp_path / "cut", tiny_model_dir, RESUMABLE)
    process = subprocess.Popen(
        cli_command("train", cut.name),
        cwd=cut.parent,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoints = run_dir(cut.parent) / "checkpoints" / "train"
    wait_for(checkpoints / "step-10" / "state.json", process)
    process.kill()  # SIGKILL: no chance to save anything
    process.wait()
    resumed = run_cli("train", cut.name, "--resume", cwd=cut.parent)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stderr
    expected, got = step_losses(run_dir(whole.parent)), step_losses(run_dir(cut.parent))
    assert sorted(got) == list(range(1, 41))
    for step in range(1, 41):
        assert got[step] == pytest.approx(expected[step], abs=1e-6), step
    a = load_file(run_dir(whole.parent) / "train" / "adapter" / "adapter_model.safetensors")
    b = load_file(run_dir(cut.parent) / "train" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_0_saying_how_to_resume(
    tmp_path: Path, tiny_model_dir
) -> None:
    config = write_config(tmp_path, tiny_model_dir, "  max_steps: 400\n  batch_size: 2\n")
    process = subprocess.Popen(
        cli_command("train", config.name),
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(run_dir(tmp_path) / "metrics.jsonl", process)
    while "loss" not in (run_dir(tmp_path) / "metrics.jsonl").read_text():
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-2000:]
    assert "stopped by SIGTERM at step" in stderr
    assert f"Resume with: tuneforge train {config.name} --resume" in " ".join(stderr.split())
    assert list((run_dir(tmp_path) / "checkpoints" / "train").glob("step-*/state.json"))
    assert not (run_dir(tmp_path) / "train").exists()  # the stage did not finish


@pytest.mark.slow
def test_a_nan_loss_stops_naming_the_step(tmp_path: Path, tiny_model_dir) -> None:
    config = write_config(
        tmp_path,
        tiny_model_dir,
        "  max_steps: 30\n  batch_size: 2\n  lr: 1.0e+30\n"
        "  warmup_ratio: 0\n  max_grad_norm: 1.0e+30\n",
    )
    result = run_cli("train", config.name, cwd=tmp_path)
    assert result.returncode == 1
    message = " ".join(result.stderr.split())
    assert "loss is nan at step" in message and "last good checkpoint: none" in message


METHODS = {
    "full": "  kind: full\n",
    "freeze": "  kind: freeze\n  train_layers: 1\n  unfreeze_every: 10\n",
    "lora": "  kind: lora\n  rslora: true\n",
    "dora": "  kind: dora\n",
    "qlora": "  kind: qlora\n",
    "ia3": "  kind: ia3\n",
    "prompt": "  kind: prompt\n  virtual_tokens: 8\n",
    "prefix": "  kind: prefix\n  virtual_tokens: 8\n",
}
LR = {"full": 1e-3, "freeze": 1e-3, "ia3": 3e-2, "prompt": 3e-2, "prefix": 1e-2}


@pytest.fixture(scope="module")
def shared_data(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir) -> Path:
    """A folder whose data stage has run once; every method's run there reuses it."""
    folder = tmp_path_factory.mktemp("methods")
    write_config(folder, tiny_model_dir, "  max_steps: 1\n", samples=60)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(METHODS))
def test_every_method_trains_through_the_cli_and_lowers_val_loss(
    shared_data: Path, tiny_model_dir, kind: str
) -> None:
    config = shared_data / f"{kind}.yaml"
    config.write_text(
        (shared_data / "train.yaml")
        .read_text()
        .replace("name: t", f"name: m-{kind}")
        .replace(
            "  max_steps: 1\n", f"  max_steps: 12\n  batch_size: 4\n  lr: {LR.get(kind, 5e-3)}\n"
        )
        + f"method:\n{METHODS[kind]}"
    )
    result = run_cli("train", config.name, cwd=shared_data)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "stage data: skipped" in result.stderr  # prepared once for every method
    (run,) = (shared_data / "runs" / f"m-{kind}").iterdir()
    summary = json.loads((run / "train" / "_stage.json").read_text())["summary"]
    assert summary["method"] == kind
    assert summary["val_loss_after"] < summary["val_loss_before"]
    output = run / "train" / summary["output"]
    assert list(output.glob("*.safetensors")) and not list(output.glob("*.bin"))


@pytest.mark.slow
def test_pretrain_objective_trains_on_raw_text(
    tmp_path: Path, tiny_model_dir, public_fixtures: Path
) -> None:
    text = public_fixtures / "wiki_demo.txt"
    config = tmp_path / "pretrain.yaml"
    config.write_text(
        f"name: t\nruns_dir: {tmp_path / 'runs'}\nobjective: pretrain\n"
        f"model:\n  name_or_path: {tiny_model_dir}\n"
        f"data:\n  path: {text}\n  max_length: 64\n  max_samples: 300\n"
        "train:\n  max_steps: 20\n  batch_size: 4\n  lr: 5.0e-3\n  packing: true\n"
    )
    assert run_cli("data", "prepare", config.name, cwd=tmp_path).returncode == 0
    result = run_cli("train", config.name, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir(tmp_path) / "train" / "_stage.json").read_text())["summary"]
    assert summary["objective"] == "pretrain"
    assert summary["val_loss_after"] < summary["val_loss_before"]


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tmp_path: Path, tiny_model_dir) -> None:
    adapters = {}
    for nproc, batch in ((1, 4), (2, 2)):
        folder = tmp_path / f"p{nproc}"
        train = f"  max_steps: 6\n  batch_size: {batch}\n  lr: 5.0e-3\n  grad_accum: 2\n"
        config = write_config(folder, tiny_model_dir, train, "method:\n  dropout: 0.0\n")
        result = run_cli("train", config.name, "--nproc", str(nproc), cwd=folder)
        assert result.returncode == 0, result.stderr[-3000:]
        summary = json.loads((run_dir(folder) / "train" / "_stage.json").read_text())["summary"]
        assert summary["processes"] == nproc
        adapters[nproc] = (
            load_file(run_dir(folder) / "train" / "adapter" / "adapter_model.safetensors"),
            step_losses(run_dir(folder)),
        )
    (one, one_losses), (two, two_losses) = adapters[1], adapters[2]
    assert max(float((one[k] - two[k]).abs().max()) for k in one) <= 1e-4
    for step, loss in one_losses.items():
        assert two_losses[step] == pytest.approx(loss, abs=1e-4)


@pytest.mark.slow
def test_early_stopping_replay_packing_and_checkpointing_in_one_run(
    tmp_path: Path, tiny_model_dir
) -> None:
    replay = tmp_path / "general.jsonl"
    replay.write_text(
        "\n".join(
            json.dumps({"text": f"Paragraph {i}: rivers carry water from the hills to the sea."})
            for i in range(40)
        )
    )
    train = (
        "  max_steps: 60\n  batch_size: 2\n  lr: 0.3\n  warmup_ratio: 0\n  packing: true\n"
        "  gradient_checkpointing: true\n  eval_every: 2\n  early_stopping_patience: 2\n"
        f"  replay:\n    path: {replay}\n    fraction: 0.2\n"
    )
    config = write_config(tmp_path, tiny_model_dir, train)
    result = run_cli("train", config.name, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir(tmp_path) / "train" / "_stage.json").read_text())["summary"]
    assert "early stopping at step" in result.stderr
    assert summary["steps"] < 60 and summary["best_step"] < summary["steps"]
    assert summary["val_loss_after"] == pytest.approx(summary["best_val_loss"], abs=1e-4)
    logged = [json.loads(line) for line in (run_dir(tmp_path) / "metrics.jsonl").open()]
    assert [r["step"] for r in logged if "val_loss" in r] == list(range(2, summary["steps"] + 1, 2))
