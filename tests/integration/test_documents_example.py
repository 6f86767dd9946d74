"""examples/documents through the real CLI: one `data prepare` synthesizes and prepares a
continued-pre-training set and a Q&A set from a folder of documents, then `run` tunes on them.

The example's teacher answers come with it (``synth.answers``), so no request is sent.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from tests_support import run_cli

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "documents"
CHUNKS, PAIRS = 28, 51  # the bundled documents at max_tokens 200; the answers' pairs


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("example") / "documents"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("synth", "runs"))
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["runs_dir"] = str(folder.parent / "runs")
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


@pytest.fixture(scope="module")
def prepared(example: Path) -> tuple[Path, str]:
    done = run_cli("data", "prepare", "config.yaml", cwd=example)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = sorted((example.parent / "runs" / "documents").iterdir())
    return runs[-1], done.stdout + done.stderr


def samples(run: Path) -> dict[str, list[dict]]:
    found = {}
    for split in ("train", "val", "test"):
        path = run / "data" / "samples" / f"{split}.jsonl"
        found[split] = [json.loads(line) for line in path.read_text().splitlines()]
    return found


def test_one_data_prepare_writes_the_qa_set_from_the_bundled_answers(
    example: Path, prepared: tuple[Path, str]
) -> None:
    _, output = prepared
    books = json.loads((example / "synth" / "qa.books.json").read_text())
    assert (books["items"], books["requests"], books["failed"]) == (CHUNKS, CHUNKS, {})
    assert (books["bill"]["sent"], books["bill"]["cached"]) == (0, CHUNKS)
    assert (books["pairs"], books["kept"], books["unparsed_answers"]) == (PAIRS, PAIRS, 0)
    assert "synth ->" in output and "mix (concat): cpt" in output
    lines = (example / "synth" / "qa.jsonl").read_text().splitlines()
    assert len(lines) == PAIRS
    first = json.loads(lines[0])
    assert first["meta"]["synth"]["teacher"] == "example-teacher"
    assert first["meta"]["synth"]["source_id"] == "atlas3-user-guide.md#1"
    assert first["meta"]["split_group"] == "synth:atlas3-user-guide.md#1"


def test_the_mix_holds_every_chunk_and_pair_and_a_chunks_pairs_share_a_split(
    prepared: tuple[Path, str],
) -> None:
    run, _ = prepared
    manifest = json.loads((run / "manifest.json").read_text())
    books = manifest["stages"]["data"]["summary"]
    assert books["read"] == CHUNKS + PAIRS and books["quarantined"] == 0
    assert books["read"] == books["kept"] + sum(books["dropped"].values())
    mix = books["mix"]["sources"]
    assert set(mix) == {"cpt", "qa"}
    assert mix["cpt"]["taken"] + mix["qa"]["taken"] == books["kept"]
    assert mix["qa"]["taken"] >= PAIRS - 2  # at most a near-duplicate question or two go
    found = samples(run)
    split_of_group = defaultdict(set)
    for split, rows in found.items():
        for row in rows:
            if "messages" in row:
                split_of_group[row["meta"]["split_group"]].add(split)
    assert len(split_of_group) == CHUNKS
    assert all(len(splits) == 1 for splits in split_of_group.values())
    held_out = [r for split in ("val", "test") for r in found[split] if "messages" in r]
    assert held_out, "no held-out questions to evaluate on"
    # chunks keep their document's metadata (the release notes' lines are plain text records)
    documents = {row["meta"].get("doc_type") for row in found["train"] if "text" in row}
    assert documents >= {"markdown", "html", "pdf", "docx"}


def test_run_tunes_on_both_sets_and_beats_the_base_on_held_out_questions(
    example: Path, prepared: tuple[Path, str]
) -> None:
    # the shipped config, without the bias and red-team suites (no gate reads them)
    quick = ["--set", "eval.bias.enabled=false", "--set", "eval.safety.enabled=false"]
    done = run_cli("run", "config.yaml", *quick, cwd=example)
    assert done.returncode == 0, done.stderr[-3000:]
    run = sorted((example.parent / "runs" / "documents").iterdir())[-1]
    assert run != prepared[0]
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert stages["data"]["status"] == "skipped"  # the prepared data, reused
    books = json.loads((example / "synth" / "qa.books.json").read_text())
    assert books["bill"]["sent"] == 0
    report = json.loads((run / "eval" / "report.json").read_text())
    assert report["gates"]["passed"], report["gates"]
    base, tuned = report["metrics"]["base"], report["metrics"]["tuned"]
    assert tuned["rouge_l"] > base["rouge_l"] + 0.05, report["metrics"]
    assert tuned["text_perplexity"] < base["text_perplexity"] / 4  # it learned its documents
    assert report["samples"] == 12  # 8 held-out questions, 4 held-out chunks
    assert (run / "export" / "merged" / "config.json").is_file()
