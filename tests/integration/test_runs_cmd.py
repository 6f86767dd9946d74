"""`tuneforge runs ...` through the real CLI (in-process), on runs of the tiny model.

One set of runs serves every test: the same config twice (the second with
``--force``, so every stage really runs again), and one with another learning
rate and a gate it fails. The removal test comes last: it deletes runs.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tuneforge.cli.main import main
from tuneforge.console import err, out
from tuneforge.runs.catalog import read_metrics

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "examples" / "data" / "support_tickets.jsonl"
pytestmark = pytest.mark.slow


def cli(*args: str) -> tuple[int, str, str]:
    """Run `tuneforge ARGS` in this process; return the exit code, stdout and stderr."""
    with pytest.MonkeyPatch.context() as patch:
        stdout, stderr = io.StringIO(), io.StringIO()
        patch.setattr(sys, "stdout", stdout)
        patch.setattr(sys, "stderr", stderr)
        patch.setenv("TUNEFORGE_TRACK_BACKENDS", "")  # the autouse fixture is per test
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        for console in (out, err):
            patch.setattr(console, "width", 220)
        code = main(list(args))
    return code, stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("runs-cmd")
    config = folder / "repro.yaml"
    config.write_text(
        f"name: repro\nseed: 7\nruns_dir: {folder / 'runs'}\n"
        f"model:\n  name_or_path: {tiny_model_dir}\n"
        f"data:\n  path: {DATA}\n  max_samples: 48\n"
        "train:\n  max_steps: 10\n  batch_size: 4\n  lr: 1.0e-3\n  eval_every: 5\n"
        "eval:\n  max_samples: 8\n  max_new_tokens: 8\n  bootstrap_samples: 100\n"
        "  compare_base: false\n"
        "  bias: {enabled: false}\n  safety: {enabled: false}\n  retention: {enabled: false}\n"
        "  gates: ['exact_match >= 0']\n"
    )
    root = folder / "runs"
    first = cli("run", str(config))
    second = cli("run", str(config), "--force")  # every stage again, nothing reused
    other = cli("run", str(config), "--set", "train.lr=3e-3", "--set", "eval.gates=['chrf >= 99']")
    assert (first[0], second[0], other[0]) == (0, 0, 3), (first[2], second[2], other[2])
    made = sorted((root / "repro").iterdir())
    assert len(made) == 3
    return {"root": root, "config": config, "first": made[0], "second": made[1], "other": made[2]}


def label(run: Path) -> str:
    return f"{run.parent.name}/{run.name}"


def test_same_config_and_seed_give_bitwise_identical_numbers(runs: dict[str, Any]) -> None:
    first, second = (read_metrics(runs[k] / "metrics.jsonl") for k in ("first", "second"))
    steps = [[r for r in m if r["stage"] == "train"] for m in (first, second)]
    losses = [[(r["step"], r["loss"]) for r in m if "loss" in r] for m in steps]
    val = [[(r["step"], r["val_loss"]) for r in m if "val_loss" in r] for m in steps]
    assert len(losses[0]) == 10 and [s for s, _ in val[0]] == [5, 10]
    assert losses[0] == losses[1]  # exact equality, not approx
    assert val[0] == val[1]
    evals = [[r for r in m if r["stage"] == "eval"] for m in (first, second)]
    assert [{k: v for k, v in r.items() if k != "time"} for r in evals[0]] == [
        {k: v for k, v in r.items() if k != "time"} for r in evals[1]
    ]
    summaries = [
        json.loads((runs[k] / "manifest.json").read_text())["stages"]["train"]["summary"]
        for k in ("first", "second")
    ]
    for key in ("val_loss_before", "val_loss_after", "train_loss_last", "trained_tokens"):
        assert summaries[0][key] == summaries[1][key], key
    weights = [(runs[k] / "train/adapter").iterdir() for k in ("first", "second")]
    files = [{p.name: p.read_bytes() for p in found} for found in weights]
    assert files[0] == files[1]  # adapter weights and config, byte for byte


def test_list_shows_method_metrics_and_gates(runs: dict[str, Any]) -> None:
    code, text, _ = cli("runs", "list", "--runs-dir", str(runs["root"]), "--json")
    assert code == 0
    rows = {row["run"]: row for row in json.loads(text)}
    first, other = rows[label(runs["first"])], rows[label(runs["other"])]
    assert list(rows)[:3] == [label(runs[k]) for k in ("other", "second", "first")]  # newest first
    assert first["method"] == "lora sft" and first["gates"] == "passed"
    assert first["stages"] == {"data": "done", "train": "done", "eval": "done", "export": "done"}
    summary = json.loads((runs["first"] / "manifest.json").read_text())["stages"]
    assert first["metrics"]["val_loss"] == summary["train"]["summary"]["val_loss_after"]
    assert (
        first["metrics"]["exact_match"]
        == summary["eval"]["summary"]["values"]["tuned"]["exact_match"]
    )
    assert other["gates"] == "FAILED 1"
    assert other["stages"] == {"data": "reused", "train": "done", "eval": "done"}
    code, table, _ = cli("runs", "list", "repro", "--runs-dir", str(runs["root"]))
    assert code == 0
    assert label(runs["other"]) in table and "FAILED 1" in table and "data* train eval" in table


def test_show_prints_hash_stages_and_metrics(runs: dict[str, Any]) -> None:
    code, text, _ = cli("runs", "show", label(runs["first"]), "--runs-dir", str(runs["root"]))
    assert code == 0
    manifest = json.loads((runs["first"] / "manifest.json").read_text())
    assert manifest["config_hash"] in text
    assert "learning" not in text and "lr: 0.001" in text  # the resolved config
    for stage in ("data", "train", "eval", "export"):
        assert f"│ {stage} " in text
    assert "Task metrics" in text and "exact_match >= 0" in text
    assert f"exported: {(runs['first'] / 'export').resolve()}" in text


def test_compare_names_the_changed_keys_and_draws_the_curves(
    runs: dict[str, Any], tmp_path: Path
) -> None:
    png = tmp_path / "curves.png"
    args = [label(runs["first"]), label(runs["other"])]
    code, text, _ = cli(
        "runs", "compare", *args, "--runs-dir", str(runs["root"]), "--out", str(png)
    )
    assert code == 0, text
    diff = text.split("Metrics")[0]
    assert "train.lr" in diff and "0.003" in diff and "eval.gates" in diff
    assert "train.max_steps" not in diff and "data.path" not in diff
    assert "train.val_loss_after" in text and f"loss curves: {png}" in text
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    code, text, _ = cli("runs", "compare", "repro", "--runs-dir", str(runs["root"]))
    assert code == 2


def test_a_bad_run_is_a_one_line_error(runs: dict[str, Any]) -> None:
    code, _, text = cli("runs", "show", "nosuch", "--runs-dir", str(runs["root"]))
    assert code == 2
    assert text.strip().count("\n") == 0
    assert "no run named 'nosuch'" in text and "repro (3 runs)" in text
    code, _, text = cli("runs", "show", "repro/2", "--runs-dir", str(runs["root"]))
    assert code == 2 and "fits 3 runs" in text


def test_reproduce_repeats_the_first_run_bitwise(runs: dict[str, Any]) -> None:
    code, text, errors = cli(
        "runs", "reproduce", label(runs["first"]), "--runs-dir", str(runs["root"])
    )
    assert code == 0, errors[-3000:]
    assert "train.loss (10 steps" in text and "train.weights" in text
    assert " no " not in text.split("Reproduction of")[1]
    assert "numbers identical (bitwise)" in text
    assert "warning" not in errors
    newest = sorted((runs["root"] / "repro").iterdir())[-1]
    manifest = json.loads((newest / "manifest.json").read_text())
    assert all(s["status"] == "done" for s in manifest["stages"].values())  # nothing reused


def test_rm_refuses_a_run_others_link_to_then_deletes(runs: dict[str, Any], tmp_path: Path) -> None:
    root = runs["root"]
    code, _, _ = cli("run", str(runs["config"]))  # every stage reused: links only
    assert code == 0
    linked = sorted((root / "repro").iterdir())[-1]
    source = (linked / "train").resolve().parent
    code, _, text = cli("runs", "rm", label(source), "--runs-dir", str(root), "--yes")
    assert code == 2, text
    assert f"used by {label(linked)} (links data, train, eval, export)" in text, text
    assert source.is_dir()
    code, stdout, _ = cli("runs", "rm", label(linked), "--runs-dir", str(root), "--yes")
    assert code == 0 and f"deleted {label(linked)}" in stdout
    assert not linked.exists() and source.is_dir()
    elsewhere = tmp_path / "repro" / "20260101-000000"  # a run, but not under --runs-dir
    elsewhere.mkdir(parents=True)
    (elsewhere / "manifest.json").write_text('{"stages": {}}')
    code, _, text = cli("runs", "rm", str(elsewhere), "--runs-dir", str(root), "--yes")
    assert code == 2 and "not inside the runs directory" in text and elsewhere.is_dir()
