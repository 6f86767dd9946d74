"""Each stage alone through the real CLI, on a local model folder, in one run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests_support import run_cli
from tuneforge.runs.hashing import file_sha256

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_stages_one_by_one_share_a_run(tmp_path: Path, tiny_model_dir: Path) -> None:
    config = tmp_path / "stages.yaml"
    config.write_text(
        f"name: stages\nruns_dir: {tmp_path / 'runs'}\n"
        f"model:\n  name_or_path: {tiny_model_dir}\n"
        f"data:\n  path: {REPO / 'examples/data/support_tickets.jsonl'}\n  max_samples: 60\n"
        "train:\n  max_steps: 4\n  batch_size: 4\n  lr: 1.0e-3\n"
        "eval:\n  max_samples: 4\n  max_new_tokens: 8\n"
    )
    for command in (["data", "prepare"], ["train"], ["eval"], ["export"]):
        result = run_cli(*command, config.name, cwd=tmp_path)
        assert result.returncode == 0, (command, result.stderr[-3000:])
        assert "skipped" not in result.stderr
    runs = list((tmp_path / "runs" / "stages").iterdir())
    assert len(runs) == 1  # every stage command reused the run with this config
    manifest = json.loads((runs[0] / "manifest.json").read_text())
    assert list(manifest["stages"]) == ["data", "train", "eval", "export"]
    assert all(s["status"] == "done" for s in manifest["stages"].values())
    assert set(manifest["inputs"]) >= {str(tiny_model_dir / "model.safetensors")}
    data_books = manifest["stages"]["data"]["summary"]
    assert data_books["read"] == 60
    assert data_books["outputs"]["packed/train.parquet"] == file_sha256(
        runs[0] / "data" / "packed" / "train.parquet"
    )
    assert "exported:" in result.stdout
    marker = runs[0] / "export" / "_stage.json"
    before = marker.stat().st_mtime_ns
    again = run_cli("export", config.name, "--force", cwd=tmp_path)
    assert again.returncode == 0 and "skipped" not in again.stderr
    assert marker.stat().st_mtime_ns != before  # export ran again ...
    stages = json.loads((runs[0] / "manifest.json").read_text())["stages"]
    assert stages["train"]["status"] == "done"  # ... and train was only read, not redone
    assert stages["train"]["seconds"] == manifest["stages"]["train"]["seconds"]


@pytest.mark.slow
def test_eval_with_a_judge_endpoint_and_a_gate_on_its_score(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from judge_stand_in import judge_stand_in

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    config = tmp_path / "judged.yaml"
    config.write_text(
        f"name: judged\nruns_dir: {tmp_path / 'runs'}\n"
        f"model:\n  name_or_path: {tiny_model_dir}\n"
        f"data:\n  path: {REPO / 'examples/data/support_tickets.jsonl'}\n  max_samples: 60\n"
        "train:\n  max_steps: 2\n  batch_size: 4\n"
        "eval:\n  max_samples: 5\n  max_new_tokens: 8\n"
        "  bias: {enabled: false}\n  safety: {enabled: false}\n  retention: {enabled: false}\n"
    )
    with judge_stand_in() as (url, handler):
        result = run_cli(
            "run",
            config.name,
            "--set",
            f"eval.judge.base_url={url}",
            "--set",
            "eval.judge.model=grader",
            "--set",
            'eval.gates=["judge.score <= base + 0.5", "judge.score >= 0.9"]',
            cwd=tmp_path,
        )
    assert result.returncode == 3, result.stderr[-3000:]  # the barely trained replies are poor
    assert "judge.score >= 0.9" in result.stderr
    assert not list((tmp_path / "runs" / "judged").glob("*/export"))
    run = next((tmp_path / "runs" / "judged").iterdir())
    report = json.loads((run / "eval" / "report.json").read_text())
    for model in ("tuned", "base"):
        judged = report["judge"][model]
        assert judged["parsed"] == 5 and judged["failed"] == 0
        assert judged["score"] == report["values"][model]["judge.score"] == 0.25  # all 2 of 5
    assert len(handler.requests) == 10 and {r["body"]["model"] for r in handler.requests} == {
        "grader"
    }
    assert [g["passed"] for g in report["gates"]["results"]] == [True, False]


@pytest.mark.slow
def test_models_tiny_builds_a_standard_hf_folder(tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    result = run_cli(
        "models",
        "tiny",
        str(out),
        "--pretrain-steps",
        "3",
        "--hidden-size",
        "32",
        "--num-layers",
        "1",
        "--vocab-size",
        "400",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tiny model:" in result.stdout
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.model_type == "llama"
    assert tokenizer.eos_token == "<|im_end|>"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert model.config.vocab_size >= len(tokenizer)
