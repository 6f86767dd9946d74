"""Run directories, manifests, and the stage cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from tuneforge.config import config_hash, load_config
from tuneforge.runs import create_run, find_finished, latest_run, run_stage
from tuneforge.runs.hashing import cached_file_sha256, file_sha256


@pytest.fixture
def config(tmp_path: Path):
    (tmp_path / "d.jsonl").write_text('{"messages": []}\n')
    path = tmp_path / "cfg.yaml"
    path.write_text(
        f"name: unit\nseed: 5\nruns_dir: {tmp_path / 'runs'}\n"
        "model:\n  name_or_path: tiny\ndata:\n  path: d.jsonl\n"
    )
    return load_config(path)


def test_run_directory_layout_and_manifest(config, tmp_path: Path) -> None:
    run = create_run(config, tmp_path / "cfg.yaml")
    assert run.path.parent == tmp_path / "runs" / "unit"
    saved = yaml.safe_load((run.path / "config.yaml").read_text())
    assert saved["seed"] == 5 and saved["train"]["lr"] == config.train.lr
    manifest = run.read_manifest()
    assert manifest["config_hash"] == config_hash(config)
    assert manifest["seed"] == 5
    assert manifest["name"] == "unit"
    assert {"torch", "transformers", "peft", "tuneforge"} <= set(manifest["packages"])
    assert manifest["packages"]["torch"]
    hardware = manifest["hardware"]
    assert hardware["cpu_count"] >= 1 and "cuda" in hardware and "cpu_bf16" in hardware
    assert manifest["stages"] == {}
    assert run.metrics_path.exists()


def test_two_runs_get_distinct_directories(config) -> None:
    first, second = create_run(config), create_run(config)
    assert first.path != second.path
    assert latest_run(config).path == second.path


def test_record_input_hashes_content(config, tmp_path: Path) -> None:
    run = create_run(config)
    digest = run.record_input(tmp_path / "d.jsonl")
    assert run.read_manifest()["inputs"][str(tmp_path / "d.jsonl")] == digest
    assert digest == file_sha256(tmp_path / "d.jsonl")


def test_log_metrics_appends_json_lines(config) -> None:
    run = create_run(config)
    run.log_metrics("train", step=1, loss=2.5)
    run.log_metrics("train", step=2, loss=2.0)
    lines = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    assert [(r["stage"], r["step"], r["loss"]) for r in lines] == [
        ("train", 1, 2.5),
        ("train", 2, 2.0),
    ]


def _work(calls: list[str], value: str):
    def work(out: Path) -> dict:
        calls.append(value)
        (out / "result.txt").write_text(value)
        return {"value": value}

    return work


def test_stage_runs_then_is_skipped_in_a_later_run(config) -> None:
    calls: list[str] = []
    messages: list[str] = []
    first = run_stage(create_run(config), "data", {"x": 1}, _work(calls, "a"), say=messages.append)
    assert not first.skipped and calls == ["a"]
    later = create_run(config)
    second = run_stage(later, "data", {"x": 1}, _work(calls, "b"), say=messages.append)
    assert second.skipped and calls == ["a"]
    assert second.summary == {"value": "a"}
    assert (later.path / "data").is_symlink()
    assert (later.path / "data" / "result.txt").read_text() == "a"
    assert messages and messages[-1].startswith("stage data: skipped, inputs unchanged since unit/")
    assert later.read_manifest()["stages"]["data"]["status"] == "skipped"


def test_changed_inputs_or_force_rerun(config) -> None:
    calls: list[str] = []
    run_stage(create_run(config), "data", {"x": 1}, _work(calls, "a"), say=lambda _: None)
    run_stage(create_run(config), "data", {"x": 2}, _work(calls, "b"), say=lambda _: None)
    run_stage(
        create_run(config), "data", {"x": 2}, _work(calls, "c"), force=True, say=lambda _: None
    )
    assert calls == ["a", "b", "c"]


def test_failed_stage_leaves_nothing_that_looks_finished(config) -> None:
    run = create_run(config)

    def explode(out: Path) -> dict:
        (out / "partial.bin").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        run_stage(run, "train", {"x": 1}, explode)
    assert sorted(os.listdir(run.path)) == ["config.yaml", "manifest.json", "metrics.jsonl"]
    assert find_finished(run.root, "train", "anything") is None
    calls: list[str] = []
    result = run_stage(run, "train", {"x": 1}, _work(calls, "ok"), say=lambda _: None)
    assert not result.skipped and calls == ["ok"]


def test_temporary_folder_without_marker_is_never_reused(config) -> None:
    run = create_run(config)
    (run.path / "data").mkdir()  # e.g. a folder left by an older, killed process
    (run.path / "data" / "result.txt").write_text("stale")
    calls: list[str] = []
    result = run_stage(run, "data", {"x": 1}, _work(calls, "fresh"), say=lambda _: None)
    assert not result.skipped
    assert (run.path / "data" / "result.txt").read_text() == "fresh"


def test_cached_hash_matches_and_tracks_changes(tmp_path: Path) -> None:
    target, cache = tmp_path / "w.bin", tmp_path / "cache.json"
    target.write_bytes(b"abc")
    assert cached_file_sha256(target, cache) == file_sha256(target)
    target.write_bytes(b"abcd")
    os.utime(target, ns=(1, 1))
    assert cached_file_sha256(target, cache) == file_sha256(target)


def test_reusing_a_stage_within_its_own_run_keeps_its_record(config) -> None:
    run = create_run(config)
    messages: list[str] = []
    run_stage(run, "data", {"x": 1}, _work([], "a"), say=messages.append)
    again = run_stage(run, "data", {"x": 1}, _work([], "b"), say=messages.append)
    assert again.skipped and again.summary == {"value": "a"}
    assert messages == ["stage data: up to date in this run"]
    assert run.read_manifest()["stages"]["data"]["status"] == "done"
    assert not (run.path / "data").is_symlink()
