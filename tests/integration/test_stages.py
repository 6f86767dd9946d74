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


TINY = (  # a few seconds to build
    "  name_or_path: tiny\n  tiny: {vocab_size: 400, hidden_size: 32, num_layers: 1,\n"
    "    corpus_paragraphs: 10, corpus_dialogues: 10, pretrain_steps: 2, pretrain_seq_len: 16}\n"
)


@pytest.mark.slow
def test_the_tiny_cache_gives_another_runs_directory_a_copy_of_the_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tuneforge.cli.main import main
    from tuneforge.models.tiny import CACHE_ENV, CACHE_RECORD

    cache = tmp_path / "tiny-cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))

    def prepare(folder: Path) -> tuple[Path, dict, str]:
        """`tuneforge data prepare` in a runs directory of its own; its run, base record, stderr."""
        folder.mkdir()
        config = folder / "cached.yaml"
        config.write_text(
            f"name: cached\nruns_dir: {folder / 'runs'}\nmodel:\n{TINY}"
            f"data:\n  path: {REPO / 'examples/data/support_tickets.jsonl'}\n  max_samples: 20\n"
        )
        assert main(["data", "prepare", str(config)]) == 0
        (run,) = (folder / "runs" / "cached").iterdir()
        base = json.loads((run / "manifest.json").read_text())["stages"]["base"]
        return run, base, capsys.readouterr().err

    def weights(run: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in (run / "base").iterdir() if p.name != "_stage.json"}

    first, built, said = prepare(tmp_path / "a")
    assert built["status"] == "done" and "copied_from" not in built["summary"]
    assert f"building the tiny base model (cached for later runs and in {cache})" in said
    (entry,) = [p for p in cache.iterdir() if not p.name.startswith(".")]  # not its lock files
    assert entry.name == built["key"]  # the base stage's key: spec, seed, build, version
    record = json.loads((entry / CACHE_RECORD).read_text())
    assert record["summary"] == built["summary"]
    assert record["files"]["model.safetensors"] == file_sha256(first / "base/model.safetensors")

    second, copied, said = prepare(tmp_path / "b")
    assert not (second / "base").is_symlink()  # a copy: the run stays self-contained
    assert copied["status"] == "done" and copied["key"] == built["key"]
    assert copied["summary"] == {**built["summary"], "copied_from": str(entry)}
    assert f"tiny base model copied from the tiny-model cache ({entry})" in said
    assert "building" not in said and weights(second) == weights(first)

    (entry / "model.safetensors").write_bytes(b"changed")  # a damaged entry is built again
    third, rebuilt, said = prepare(tmp_path / "c")
    assert "copied_from" not in rebuilt["summary"] and "building the tiny base" in said
    assert weights(third) == weights(first)
    assert file_sha256(entry / "model.safetensors") == record["files"]["model.safetensors"]
