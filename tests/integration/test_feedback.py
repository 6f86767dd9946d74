"""The human feedback loop through the real CLI: sample, rank, pairs, prepare."""

from __future__ import annotations

import json
from pathlib import Path

from tests_support import run_cli

PROMPTS = [
    {"messages": [{"role": "user", "content": f"Say something about {topic}."}]}
    for topic in ("tea", "rain", "maps", "bread", "boats")
]


def test_sample_rank_and_read_back_as_pairs(tmp_path: Path, tiny_model_dir: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    labelling = tmp_path / "to_rank.jsonl"
    sampled = run_cli(
        "feedback", "sample", str(tiny_model_dir), "--prompts", str(prompts),
        "--out", str(labelling), "-k", "3", "--max-new-tokens", "8", cwd=tmp_path,
    )  # fmt: skip
    assert sampled.returncode == 0, sampled.stderr[-2000:]
    records = [json.loads(line) for line in labelling.read_text().splitlines()]
    assert len(records) == 5
    assert all(len(r["responses"]) == 3 for r in records)
    assert all(r["responses"][0]["rank"] is None for r in records)
    assert records[0]["prompt"] == PROMPTS[0]["messages"]
    # a person ranks four of them, one by ranks with a tie, and leaves the last alone
    records[0]["ranking"] = [2, 0, 1]
    records[1]["ranking"] = [0, 1, 2]
    records[2]["ranking"] = [1, 2, 0]
    for reply, rank in zip(records[3]["responses"], (1, 1, 2), strict=True):
        reply["rank"] = rank
    labelled = tmp_path / "ranked.jsonl"
    labelled.write_text("".join(json.dumps(r) + "\n" for r in records))
    pairs = tmp_path / "pairs.jsonl"
    done = run_cli("feedback", "pairs", str(labelled), "--out", str(pairs), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "read 5 records: 8 pairs" in done.stdout and "1 not usable" in done.stdout
    written = [json.loads(line) for line in pairs.read_text().splitlines()]
    assert len(written) == 8  # 2 + 2 + 2 pairs, and 2 from the tie (each rank-1 vs the rank-2)
    first = written[0]
    assert first["preferred_output"][0]["content"] == records[0]["responses"][2]["content"]
    assert first["non_preferred_output"][0]["content"] == records[0]["responses"][0]["content"]
