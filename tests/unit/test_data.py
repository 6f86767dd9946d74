"""Readers, quarantine, books, and the grouped split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.data.readers import read_dataset
from tuneforge.data.sample import Sample
from tuneforge.data.split import split_samples
from tuneforge.errors import DataError

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_chat_and_alpaca_records_become_chat_samples(tmp_path: Path) -> None:
    alpaca = {"instruction": "Add", "input": "2 and 3", "output": "5"}
    path = write_lines(
        tmp_path / "d.jsonl", [json.dumps(CHAT).encode(), json.dumps(alpaca).encode()]
    )
    result = read_dataset(path, system_prompt="You add.")
    assert [s.kind for s in result.samples] == ["chat", "chat"]
    assert result.samples[0].messages == CHAT["messages"]
    assert result.samples[1].messages == [
        {"role": "system", "content": "You add."},
        {"role": "user", "content": "Add\n\n2 and 3"},
        {"role": "assistant", "content": "5"},
    ]
    assert result.samples[1].source == "d.jsonl:2"


def test_content_parts_are_joined(tmp_path: Path) -> None:
    record = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
            {"role": "assistant", "content": "c"},
        ]
    }
    result = read_dataset(write_lines(tmp_path / "d.jsonl", [json.dumps(record).encode()]))
    assert result.samples[0].messages[0]["content"] == "ab"


def test_bad_records_are_quarantined_with_reason_and_the_books_balance(tmp_path: Path) -> None:
    lines = [
        json.dumps(CHAT).encode(),
        b'{"messages": [',  # truncated
        b'{"messages": [{"role": "user", "content": "caf\xe9"}]}',  # latin-1 byte, not UTF-8
        json.dumps({"messages": [{"role": "user", "content": "no reply"}]}).encode(),
        json.dumps(
            {"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}
        ).encode(),
        json.dumps({"messages": [{"role": "user", "content": 5}]}).encode(),
        json.dumps([1, 2]).encode(),
        json.dumps({"foo": 1}).encode(),
        json.dumps(CHAT).encode(),
    ]
    result = read_dataset(write_lines(tmp_path / "d.jsonl", lines))
    reasons = {q.source: q.reason for q in result.quarantined}
    assert len(result.samples) == 2
    assert result.read == 9 == len(result.samples) + len(result.quarantined)
    assert reasons["d.jsonl:2"].startswith("invalid JSON")
    assert reasons["d.jsonl:3"].startswith("invalid UTF-8")
    assert reasons["d.jsonl:4"] == "no assistant turn"
    assert "role 'robot' is not one of" in reasons["d.jsonl:5"]
    assert reasons["d.jsonl:6"] == "messages[0].content must be a string"
    assert reasons["d.jsonl:7"] == "expected a JSON object, got list"
    assert reasons["d.jsonl:8"].startswith("unknown format")
    assert result.quarantined[0].raw == '{"messages": ['


def test_json_array_files_are_read(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([CHAT, CHAT]))
    assert len(read_dataset(path).samples) == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "file not found"),
        (b"", "no records in the file"),
        (b"\n\n", "no records in the file"),
    ],
)
def test_missing_or_empty_dataset_is_an_error(tmp_path: Path, content, message) -> None:
    path = tmp_path / "d.jsonl"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_dataset(path)


def test_limit_counts_records_read(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(CHAT).encode()] * 5)
    assert read_dataset(path, limit=3).read == 3


def _samples(n: int, duplicates: int = 0) -> list[Sample]:
    samples = []
    for i in range(n):
        prompt = f"question {i % (n - duplicates) if duplicates else i}"
        samples.append(
            Sample(
                id=str(i),
                kind="chat",
                source=f"f:{i}",
                messages=[
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": f"answer {i}"},
                ],
            )
        )
    return samples


def test_split_is_deterministic_sized_and_order_independent() -> None:
    samples = _samples(200)
    first = split_samples(samples, 0.1, 0.1, seed=1)
    assert {k: len(v) for k, v in first.items()} == {"train": 160, "val": 20, "test": 20}
    again = split_samples(list(reversed(samples)), 0.1, 0.1, seed=1)
    assert {s.id for s in again["test"]} == {s.id for s in first["test"]}
    other = split_samples(samples, 0.1, 0.1, seed=2)
    assert {s.id for s in other["test"]} != {s.id for s in first["test"]}


def test_variants_of_one_prompt_never_straddle_splits() -> None:
    samples = _samples(300, duplicates=100)  # 100 prompts appear twice with different answers
    splits = split_samples(samples, 0.2, 0.2, seed=0)
    where = {}
    for name, members in splits.items():
        for sample in members:
            assert where.setdefault(sample.prompt_key(), name) == name
    assert sum(len(v) for v in splits.values()) == 300
