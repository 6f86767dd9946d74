"""The quickstart through the real CLI: tuned beats base and passes its gates, reruns skip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from tests_support import run_cli
from tuneforge.runs.hashing import file_sha256

REPO = Path(__file__).resolve().parents[2]
# the shipped config as it is (its gates must pass), on 48 of the 80 test tickets
REDUCED = ["--set", "eval.max_samples=48"]


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
def test_eval_reports_intervals_retention_safety_and_passes_its_gates(first_run) -> None:
    run, stdout = first_run
    report = json.loads((run / "eval" / "report.json").read_text())
    assert report["gates"]["passed"], report["gates"]
    assert len(report["gates"]["results"]) == 5 and "Gates" in stdout
    change = report["comparison"]["exact_match"]
    assert 0 < change["low"] <= change["delta"] <= change["high"]  # better, beyond noise
    tuned, base = report["values"]["tuned"], report["values"]["base"]
    assert tuned["accuracy"] >= 0.6 and tuned["json_valid"] >= 0.95 > base["json_valid"]
    assert tuned["retention.ppl_ratio"] == report["retention"]["comparison"]["ppl_ratio"] > 0
    assert report["safety"]["tuned"]["prompts"] == 30 and "safety.blocked_rate" in tuned
    assert report["bias"]["tuned"]["pairs"] > 0 and "grounding.flagged_rate" in tuned
    groups = report["details"]["errors"]["groups"]["label"]
    assert set(groups) == {"account", "billing", "sales", "shipping", "technical"}
    assert sum(g["n"] for g in groups.values()) == 48
    worst = report["details"]["errors"]["worst"]["exact_match"]
    assert worst and all(w["score"] == 0 and w["diff"] for w in worst)
    for name in ("report.html", "report.md", "metrics.png", "suites.png"):
        assert (run / "eval" / name).stat().st_size > 500, name
    assert "Worst examples: exact_match" in (run / "eval" / "report.md").read_text()


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
    assert config["eval"]["max_samples"] == 48  # overrides are in the saved config
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
    # every format, each loaded back by a reader we did not write and compared
    summary = json.loads((export / "_stage.json").read_text())["summary"]
    for quant in ("f16", "q8_0"):
        assert (export / "gguf" / f"quickstart-{quant}.gguf").is_file()
        assert summary["gguf"][quant]["verified"]
    assert (export / "onnx" / "model.onnx").is_file() and summary["onnx"]["verified"]
    assert "FROM ./gguf/quickstart-q8_0.gguf" in (export / "Modelfile").read_text()
    sums = dict(
        reversed(line.split("  ", 1)) for line in (export / "SHA256SUMS").read_text().splitlines()
    )
    assert sums["merged/model.safetensors"] == file_sha256(export / "merged/model.safetensors")
    assert set(sums) >= {"lineage.json", "Modelfile", "onnx/model.onnx", "README.md"}
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


@pytest.fixture(scope="module")
def shuffled_project(project: Path, first_run) -> Path:
    """The quickstart trained on shuffled labels: every ticket gets another ticket's route."""
    import random

    lines = (REPO / "examples" / "data" / "support_tickets.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    replies = [r["messages"][-1]["content"] for r in records]
    random.Random(0).shuffle(replies)
    for record, reply in zip(records, replies, strict=True):
        record["messages"][-1]["content"] = reply
    data = project / "shuffled.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    config = yaml.safe_load((project / "quickstart.yaml").read_text())
    config["name"], config["data"]["path"] = "shuffled", str(data)
    (project / "shuffled.yaml").write_text(yaml.safe_dump(config))
    return project


@pytest.mark.slow
def test_a_bad_tune_fails_its_gates_and_is_not_exported(
    shuffled_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from tuneforge.cli.main import main

    monkeypatch.chdir(shuffled_project)
    short = [*REDUCED, "--set", "train.epochs=3", "--set", "export.formats=[hf,adapter]"]
    assert main(["run", "shuffled.yaml", *short]) == 3
    stderr = capsys.readouterr().err
    assert "eval gate(s) failed" in stderr and "accuracy >= 0.60" in stderr
    run = sorted((shuffled_project / "runs" / "shuffled").iterdir())[-1]
    report = json.loads((run / "eval" / "report.json").read_text())
    failed = [g for g in report["gates"]["results"] if not g["passed"]]
    assert {g["gate"] for g in failed} >= {"accuracy >= 0.60"}
    assert report["values"]["tuned"]["accuracy"] < 0.5  # routes are noise to this model
    assert not (run / "export").exists()  # the run stopped before exporting

    assert main(["eval", "shuffled.yaml", *short]) == 3  # the stored eval, same verdict
    assert main(["export", "shuffled.yaml", *short]) == 3
    assert "export refused" in capsys.readouterr().err
    assert main(["export", "shuffled.yaml", *short, "--force"]) == 0
    card = (run / "export" / "README.md").read_text()
    assert "exported with --force despite failed quality gates" in card
    assert "accuracy >= 0.60" in card
