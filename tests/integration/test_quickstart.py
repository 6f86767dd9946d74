"""The quickstart, at reduced size, through the real CLI: tuned beats base, reruns skip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from tests_support import run_cli
from tuneforge.runs.hashing import file_sha256

REPO = Path(__file__).resolve().parents[2]
REDUCED = [
    "--set",
    "model.tiny.pretrain_steps=200",
    "--set",
    "eval.max_samples=48",
]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("quickstart")
    config = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    config["data"]["path"] = str(REPO / "examples" / config["data"]["path"])
    config["runs_dir"] = str(root / "runs")
    (root / "quickstart.yaml").write_text(yaml.safe_dump(config))
    return root


@pytest.fixture(scope="module")
def first_run(project: Path) -> tuple[Path, str]:
    result = run_cli("run", "quickstart.yaml", *REDUCED, cwd=project)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted((project / "runs" / "quickstart").iterdir())
    return runs[-1], result.stdout


@pytest.mark.slow
def test_tuned_model_beats_base_by_a_wide_margin(first_run) -> None:
    run, stdout = first_run
    report = json.loads((run / "eval" / "report.json").read_text())
    base, tuned = report["metrics"]["base"], report["metrics"]["tuned"]
    assert report["samples"] == 48
    assert tuned["rouge_l"] - base["rouge_l"] > 0.5, report
    assert tuned["exact_match"] > base["exact_match"], report
    assert "Evaluation on 48 held-out test samples" in stdout
    assert "exact_match" in stdout and "rouge_l" in stdout


@pytest.mark.slow
def test_run_directory_records_everything(first_run) -> None:
    run, _ = first_run
    manifest = json.loads((run / "manifest.json").read_text())
    assert [
        manifest["stages"][s]["status"] for s in ("base", "data", "train", "eval", "export")
    ] == ["done"] * 5
    data_file = REPO / "examples" / "data" / "support_tickets.jsonl"
    assert manifest["inputs"][str(data_file)] == file_sha256(data_file)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["tiny"]["pretrain_steps"] == 200  # overrides are in the saved config
    books = json.loads((run / "data" / "_stage.json").read_text())["summary"]
    assert books["dropped"] == {"contaminated": 131}  # tickets sharing a 13-word run with test
    assert (run / "data" / "report.html").is_file() and (
        run / "data" / "token_lengths.png"
    ).is_file()
    assert (
        books["read"]
        == 800
        == books["kept"] + books["quarantined"] + sum(books["dropped"].values())
    )
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_steps = [s for s in steps if s["stage"] == "train" and "loss" in s]
    assert (
        len(train_steps)
        == json.loads((run / "train" / "_stage.json").read_text())["summary"]["steps"]
    )
    summary = json.loads((run / "train" / "_stage.json").read_text())["summary"]
    assert summary["val_loss_after"] < summary["val_loss_before"] / 3
    assert summary["precision"] == "float32"  # this CPU has no native bf16


@pytest.mark.slow
def test_export_is_a_loadable_model_that_answers_like_the_evaluated_one(first_run) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.data.render import prompt_messages, render_prompt

    run, _ = first_run
    export = run / "export"
    assert (export / "merged" / "model.safetensors").is_file()
    assert (export / "adapter" / "adapter_model.safetensors").is_file()
    assert not list(export.rglob("*.bin"))
    card = (export / "README.md").read_text()
    assert "base_model:" in card and "exact_match" in card
    tokenizer = AutoTokenizer.from_pretrained(export / "merged")
    model = AutoModelForCausalLM.from_pretrained(export / "merged")
    predictions = [
        json.loads(line) for line in (run / "eval" / "predictions.jsonl").read_text().splitlines()
    ]
    test = {
        r["id"]: r
        for r in map(json.loads, (run / "data" / "samples" / "test.jsonl").read_text().splitlines())
    }
    for row in predictions[:4]:
        prompt, _ = prompt_messages(test[row["id"]]["messages"])
        ids = torch.tensor([render_prompt(tokenizer, prompt)])
        output = model.generate(input_ids=ids, max_new_tokens=40, do_sample=False)
        assert (
            tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True).strip()
            == row["tuned"]
        )


@pytest.mark.slow
def test_second_run_skips_every_stage(project: Path, first_run) -> None:
    result = run_cli("run", "quickstart.yaml", *REDUCED, cwd=project)
    assert result.returncode == 0, result.stderr[-3000:]
    for stage in ("base", "data", "train", "eval", "export"):
        assert f"stage {stage}: skipped, inputs unchanged since quickstart/" in result.stderr
    newest = sorted((project / "runs" / "quickstart").iterdir())[-1]
    assert newest != first_run[0]
    manifest = json.loads((newest / "manifest.json").read_text())
    assert {s["status"] for s in manifest["stages"].values()} == {"skipped"}
    assert (newest / "eval" / "report.json").read_text() == (
        first_run[0] / "eval" / "report.json"
    ).read_text()
    assert "exact_match" in result.stdout


@pytest.mark.slow
def test_single_stage_commands_reuse_and_force(project: Path, first_run) -> None:
    result = run_cli("eval", "quickstart.yaml", *REDUCED, cwd=project)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "stage eval: up to date in this run" in result.stderr
    changed = run_cli(
        "eval", "quickstart.yaml", *REDUCED, "--set", "eval.max_samples=8", cwd=project
    )
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert "stage train: skipped" in changed.stderr and "stage eval: skipped" not in changed.stderr
    assert "Evaluation on 8 held-out test samples" in changed.stdout
