"""Reading runs back: finding them, their numbers, config diffs, reproduction checks, removal."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fake_runs import STEPS, make_run
from tuneforge.errors import ConfigError
from tuneforge.runs.catalog import (
    find_runs,
    gate_state,
    key_metrics,
    read_run,
    resolve_run,
    stage_states,
)
from tuneforge.runs.compare import (
    ABSENT,
    best_index,
    config_diff,
    direction,
    flatten,
    loss_curves,
    metric_rows,
    plot_loss_curves,
)
from tuneforge.runs.remove import check_inside, delete_run, dependents, describe, hand_over
from tuneforge.runs.reproduce import (
    NotReproduced,
    environment_changes,
    first_failure,
    reproduction_checks,
    table_rows,
    verdict,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    make_run(root, "quick/20261128-175742", created="2026-11-28T17:57:42+00:00")
    make_run(root, "quick/20261128-181010", created="2026-11-28T18:10:10+00:00")
    make_run(root, "other/20261127-090000", created="2026-11-27T09:00:00+00:00")
    (root / "mlflow.db").write_text("sqlite")
    (root / ".mlflow-artifacts" / "x" / "y").mkdir(parents=True)
    (root / "quick" / "tune" / "lr-search").mkdir(parents=True)  # a search study: not a run
    (root / "quick" / "tune" / "lr-search" / "study.db").write_text("sqlite")
    return root


def test_find_runs_newest_first_and_skips_what_is_not_a_run(root: Path) -> None:
    labels = [run.label for run in find_runs(root)]
    assert labels == ["quick/20261128-181010", "quick/20261128-175742", "other/20261127-090000"]
    assert [run.label for run in find_runs(root, "other")] == ["other/20261127-090000"]


def test_resolve_run_by_path_name_stamp_and_prefix(root: Path) -> None:
    assert resolve_run("quick", root).stamp == "20261128-181010"  # the newest
    assert resolve_run("quick/20261128-175742", root).stamp == "20261128-175742"
    assert resolve_run("quick/20261128-17", root).stamp == "20261128-175742"
    path = root / "other" / "20261127-090000"
    assert resolve_run(str(path), root).path == path.resolve()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nosuch", "no run named 'nosuch' under"),
        ("quick/2026", "fits 2 runs; runs of 'quick' (newest first): 20261128-181010, "),
        ("quick/1999", "not found; runs of 'quick'"),
        ("../etc", "no run named '..'"),
    ],
)
def test_resolve_run_errors_list_what_exists(root: Path, spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match="runs") as caught:
        resolve_run(spec, root)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    if spec == "nosuch":
        assert str(caught.value).endswith("runs there: other (1 run), quick (2 runs)")


def test_stage_states_gates_and_key_metrics(tmp_path: Path) -> None:
    path = make_run(tmp_path, "a/1")
    run = read_run(path, tmp_path)
    assert stage_states(run) == {"data": "done", "train": "done", "eval": "done"}
    assert gate_state(run) == "FAILED 1"
    # the gated metric first, then the report's task metrics, up to three
    assert key_metrics(run) == {"val_loss": 2.0, "loss": 1.9, "exact_match": 0.5, "rouge_l": 0.6}
    run.manifest["stages"]["export"] = {"summary": {"gates_overridden": ["gate FAILED: ..."]}}
    assert gate_state(run) == "overridden 1"
    run.manifest["stages"]["data"]["reused_from"] = "/runs/a/0/data"
    assert stage_states(run)["data"] == "reused"
    run.manifest["stages"]["eval"]["summary"]["gates"] = {"results": []}
    assert gate_state(run) == "none"
    del run.manifest["stages"]["eval"]
    assert gate_state(run) == "-" and key_metrics(run) == {"val_loss": 2.0}


def test_a_saved_config_reloads_to_the_same_hash_and_stage_keys(tmp_path: Path) -> None:
    """The resolved config.yaml a run saves must read back as the same config, to the type.

    An int default on a float field (``method.alpha: 32``) is dumped as ``32`` and read
    back as ``32.0``: a different config hash and stage keys for the same settings.
    """
    from tuneforge.config import config_hash, dump_config, load_config
    from tuneforge.pipeline import Pipeline
    from tuneforge.runs.rundir import RunDir

    data = tmp_path / "d.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    source = tmp_path / "a.yaml"
    source.write_text(f"name: a\nmodel:\n  name_or_path: tiny\ndata:\n  path: {data}\n")
    config = load_config(source)
    saved = tmp_path / "run" / "config.yaml"
    saved.parent.mkdir()
    saved.write_text(dump_config(config))
    again = load_config(saved)
    assert dump_config(again) == dump_config(config)
    assert config_hash(again) == config_hash(config)
    (saved.parent / "manifest.json").write_text("{}")
    run = RunDir(path=saved.parent, root=tmp_path)
    keys = [
        {s: Pipeline(config=c, run=run, config_file="x")._key(s) for s in ("data", "train")}
        for c in (config, again)
    ]
    assert keys[0] == keys[1]


def test_flatten_and_config_diff() -> None:
    a = {"name": "q", "train": {"lr": 1e-4, "schedule": "cosine"}, "eval": {"gates": ["x"]}}
    b = {"name": "q", "train": {"lr": 2e-4, "schedule": "cosine"}, "eval": {"gates": ["y"]}}
    assert flatten(a) == {
        "name": "q",
        "train.lr": 1e-4,
        "train.schedule": "cosine",
        "eval.gates": ["x"],
    }
    assert flatten({"mapping": {}}) == {"mapping": {}}
    assert config_diff([a, b]) == {"train.lr": [1e-4, 2e-4], "eval.gates": [["x"], ["y"]]}
    assert config_diff([a, a]) == {}
    c = {**a, "export": {"license": None}}  # a key an older config lacks
    assert config_diff([a, c]) == {"export.license": [ABSENT, None]}


def test_metric_rows_and_the_best_run(tmp_path: Path) -> None:
    runs = [read_run(make_run(tmp_path, f"a/{i}"), tmp_path) for i in (1, 2)]
    runs[1].manifest["stages"]["train"]["summary"]["val_loss_after"] = 1.5
    runs[1].manifest["stages"]["eval"]["summary"]["values"]["tuned"]["chrf"] = 30.0
    rows = metric_rows(runs)
    assert rows["train.val_loss_after"] == [2.0, 1.5]
    assert rows["train.steps"] == [3, 3] and rows["eval.chrf"] == [40.0, 30.0]
    assert "train.seconds" not in rows and "train.best_val_loss" not in rows  # absent in both
    assert best_index("train.val_loss_after", rows["train.val_loss_after"]) == 1  # lower
    assert best_index("eval.chrf", rows["eval.chrf"]) == 0  # higher
    assert best_index("eval.exact_match", rows["eval.exact_match"]) is None  # a tie
    assert best_index("eval.chrf", [40.0, None]) is None
    assert [direction(m) for m in ("eval.loss", "eval.length_words", "train.steps")] == [-1, 0, 0]
    assert direction("eval.safety.blocked_rate") == -1 and direction("eval.rouge_l") == 1


def test_loss_curves_and_their_png(tmp_path: Path) -> None:
    curves = loss_curves([*STEPS, {"stage": "train", "step": 3, "loss": 1.75}])
    assert curves == {"loss": [(1, 2.5), (2, 2.25), (3, 1.75)], "val_loss": [(2, 2.125)]}
    png = plot_loss_curves({"a/1": curves, "a/2": {"loss": [(1, 3.0)]}}, tmp_path / "x" / "c.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000


def test_reproduction_checks_ignore_timings_and_name_the_first_difference(tmp_path: Path) -> None:
    original = read_run(make_run(tmp_path, "a/1"), tmp_path)
    changed = [{**r, "time": r["time"] + 60} for r in STEPS]
    changed[0]["trained_tokens_per_s"] = 1
    again = read_run(make_run(tmp_path, "a/2", steps=changed), tmp_path)
    again.manifest["stages"]["train"]["summary"]["seconds"] = 99.0
    checks = reproduction_checks(original, again)
    names = {check.label for check in checks}
    assert {"train.loss at step 2", "train.val_loss at step 2", "train.lr at step 3"} <= names
    assert {"train.val_loss_after", "eval.tuned.chrf", "eval.base.loss"} <= names
    assert not any("time" in n or "per_s" in n or "seconds" in n for n in names)
    assert first_failure(checks) is None
    assert verdict(checks, 0.0, "a/1", "a/2") == (
        f"reproduced: all {len(checks)} numbers identical (bitwise) in a/2"
    )
    changed[1]["loss"] = 2.25 + 1e-7
    again = read_run(make_run(tmp_path, "a/3", steps=changed), tmp_path)
    checks = reproduction_checks(original, again)
    failure = first_failure(checks)
    assert failure.label == "train.loss at step 2" and failure.difference == pytest.approx(1e-7)
    with pytest.raises(NotReproduced) as caught:
        verdict(checks, 0.0, "a/1", "a/3")
    assert str(caught.value) == (
        "not reproduced: train.loss at step 2 is 2.25 in a/1 but 2.2500001 in a/3"
    )
    assert caught.value.exit_code == 1
    assert first_failure(checks, tolerance=1e-6) is None
    assert "1 numbers identical" not in verdict(checks, 1e-6, "a/1", "a/3")
    rows = {row.metric: row for row in table_rows(checks)}
    loss = rows["train.loss (3 steps, last shown)"]
    assert not loss.identical and loss.difference == pytest.approx(1e-7)
    assert rows["train.val_loss (1 steps, last shown)"].identical


def test_digests_of_data_weights_and_replies_decide_only_without_tolerance(
    tmp_path: Path,
) -> None:
    runs = []
    for stamp, weights in (("1", b"\x00\x01"), ("2", b"\x00\x01"), ("3", b"\x00\x02")):
        path = make_run(tmp_path, f"a/{stamp}")
        (path / "train" / "adapter").mkdir(parents=True)
        (path / "train" / "adapter" / "adapter_model.safetensors").write_bytes(weights)
        (path / "eval").mkdir()
        (path / "eval" / "predictions.jsonl").write_text('{"tuned": "hello"}\n')
        run = read_run(path, tmp_path)
        run.manifest["stages"]["data"]["summary"]["outputs"] = {"samples/train.jsonl": "ab12"}
        runs.append(run)
    same = {c.metric: c for c in reproduction_checks(runs[0], runs[1])}
    assert {"data.outputs", "train.weights", "eval.predictions"} <= set(same)
    assert all(check.identical for check in same.values())
    assert same["train.weights"].original.startswith("sha256:")
    checks = reproduction_checks(runs[0], runs[2])
    assert first_failure(checks).label == "train.weights"
    assert first_failure(checks, tolerance=1e-9) is None  # a digest is shown, not decisive


def test_environment_changes() -> None:
    first = {"tuneforge_version": "0.1.0", "packages": {"torch": "2.13"}, "hardware": {"cpu": 2}}
    second = {"tuneforge_version": "0.2.0", "packages": {"torch": "2.14"}, "hardware": {"cpu": 2}}
    assert environment_changes(first, first) == []
    assert environment_changes(first, second) == [
        "tuneforge 0.1.0 -> 0.2.0",
        "packages.torch 2.13 -> 2.14",
    ]


def test_removal_refuses_dependents_and_hands_stages_over(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    source = make_run(root, "q/1", created="2026-01-01T00:00:01+00:00")
    (source / "train").mkdir()
    (source / "train" / "_stage.json").write_text("{}")
    users = []
    for stamp in ("2", "3"):
        user = make_run(root, f"q/{stamp}", created=f"2026-01-01T00:00:0{stamp}+00:00", steps=[])
        os.symlink(os.path.relpath(source / "train", user), user / "train")
        manifest = json.loads((user / "manifest.json").read_text())
        manifest["stages"]["train"]["reused_from"] = str(source / "train")
        (user / "manifest.json").write_text(json.dumps(manifest))
        users.append(user)
    runs = find_runs(root)
    doomed = [run for run in runs if run.stamp == "1"]
    found = dependents(doomed, runs)
    assert describe(found) == "q/3 (links train); q/2 (links train)"
    assert dependents([r for r in runs if r.stamp != "1"], runs) == []
    assert hand_over(found) == ["moved train into q/3"]
    delete_run(doomed[0])
    assert not source.exists()
    newest, older = users[1], users[0]
    assert (newest / "train").is_dir() and not (newest / "train").is_symlink()
    assert (older / "train").resolve() == (newest / "train").resolve()
    assert (older / "train" / "_stage.json").is_file()
    record = json.loads((newest / "manifest.json").read_text())["stages"]["train"]
    assert record["status"] == "done" and "reused_from" not in record
    moved = [json.loads(line) for line in (newest / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in moved if "loss" in r] == [1, 2, 3]  # its training log came along
    reused = json.loads((older / "manifest.json").read_text())["stages"]["train"]["reused_from"]
    assert Path(reused) == (newest / "train").resolve() or Path(reused) == newest / "train"


def test_a_config_that_names_a_path_in_a_run_depends_on_it(tmp_path: Path) -> None:
    source = make_run(tmp_path, "base/1")
    model = {"name_or_path": str(source.resolve() / "export" / "merged")}
    make_run(tmp_path, "chat/1", config={"name": "chat", "model": model})
    runs = find_runs(tmp_path)
    found = dependents([r for r in runs if r.name == "base"], runs)
    assert describe(found) == "chat/1 (names a path in its config)"
    assert hand_over(found) == []  # nothing to move: the config keeps its path


def test_removal_stays_inside_the_runs_directory(tmp_path: Path) -> None:
    outside = read_run(make_run(tmp_path / "elsewhere", "q/1"), tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="not inside the runs directory"):
        check_inside(outside, tmp_path / "runs")
    check_inside(outside, tmp_path / "elsewhere")
