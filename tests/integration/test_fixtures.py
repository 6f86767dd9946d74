"""Public fixtures load as the right kind, round-trip to OpenAI JSONL, and survive damage."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from tuneforge.cli.data_convert import convert, parse_mapping, quarantine_path
from tuneforge.data.readers import ReadResult, read_dataset
from tuneforge.data.sample import Sample
from tuneforge.data.writers import openai_record, write_openai_jsonl
from tuneforge.errors import DataError

FIXTURES = {
    "alpaca_en_demo.json": ("chat", 999),
    "identity.json": ("chat", 91),
    "dpo_en_demo.json": ("preference", 300),
    "kto_en_demo.json": ("unpaired", 300),
    "glaive_toolcall_en_demo.json": ("chat", 300),
    "c4_demo.jsonl": ("text", 300),
    "wiki_demo.txt": ("text", 30),
}
ROLE = {"human": "user", "gpt": "assistant", "system": "system"}


def strip_origin(sample: Sample) -> Sample:
    return dataclasses.replace(sample, id="", source="")


def load(folder: Path, name: str, tmp_path: Path) -> tuple[ReadResult, list[dict[str, Any]]]:
    """Read a fixture, check its kind and books, round-trip it; return it and what was written."""
    kind, count = FIXTURES[name]
    result = read_dataset(folder / name)
    assert result.kinds() == {kind: count}
    assert result.books()["files"] == {name: {"read": count, "samples": count, "quarantined": 0}}
    out = tmp_path / "openai.jsonl"
    assert write_openai_jsonl(result.samples, out) == count
    back = read_dataset(out)
    assert back.quarantined == []
    assert [strip_origin(s) for s in back.samples] == [strip_origin(s) for s in result.samples]
    written = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert written == [openai_record(s) for s in result.samples]
    return result, written


def raw_json(folder: Path, name: str) -> list[dict[str, Any]]:
    return json.loads((folder / name).read_text(encoding="utf-8"))


def alpaca_messages(record: dict[str, str]) -> list[dict[str, str]]:
    prompt = record["instruction"] + (f"\n\n{record['input']}" if record["input"] else "")
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": record["output"]}]


def test_alpaca_en_demo(public_fixtures: Path, tmp_path: Path) -> None:
    result, _ = load(public_fixtures, "alpaca_en_demo.json", tmp_path)
    raw = raw_json(public_fixtures, "alpaca_en_demo.json")
    assert [s.messages for s in result.samples] == [alpaca_messages(r) for r in raw]
    assert result.samples[998].source == "alpaca_en_demo.json:999"


def test_identity_keeps_its_placeholders(public_fixtures: Path, tmp_path: Path) -> None:
    result, written = load(public_fixtures, "identity.json", tmp_path)
    raw = raw_json(public_fixtures, "identity.json")
    assert [s.messages for s in result.samples] == [alpaca_messages(r) for r in raw]
    replies = [record["messages"][-1]["content"] for record in written]
    assert replies[0] == (
        "Hello! I am {{name}}, an AI assistant developed by {{author}}. How can I assist you today?"
    )
    assert sum("{{name}}" in reply for reply in replies) == 77
    assert sum("{{author}}" in reply for reply in replies) == 60


def test_dpo_en_demo(public_fixtures: Path, tmp_path: Path) -> None:
    result, written = load(public_fixtures, "dpo_en_demo.json", tmp_path)
    raw = raw_json(public_fixtures, "dpo_en_demo.json")
    for sample, record in zip(result.samples, raw, strict=True):
        turns = record["conversations"]
        assert sample.prompt == [{"role": ROLE[t["from"]], "content": t["value"]} for t in turns]
        assert sample.chosen == [{"role": "assistant", "content": record["chosen"]["value"]}]
        assert sample.rejected == [{"role": "assistant", "content": record["rejected"]["value"]}]
    assert sum(s.prompt[0]["role"] == "system" for s in result.samples) == 80
    assert {tuple(record) for record in written} == {
        ("input", "preferred_output", "non_preferred_output")
    }


def test_kto_en_demo(public_fixtures: Path, tmp_path: Path) -> None:
    result, written = load(public_fixtures, "kto_en_demo.json", tmp_path)
    raw = raw_json(public_fixtures, "kto_en_demo.json")
    assert [s.messages for s in result.samples] == [r["messages"] for r in raw]
    assert Counter(s.label for s in result.samples) == {True: 150, False: 150}
    assert written == raw  # this file already is in the form we write


def test_glaive_toolcall_en_demo(public_fixtures: Path, tmp_path: Path) -> None:
    result, written = load(public_fixtures, "glaive_toolcall_en_demo.json", tmp_path)
    raw = raw_json(public_fixtures, "glaive_toolcall_en_demo.json")
    assert sum(s.tools is not None for s in result.samples) == 191  # 109 offer tools=""
    calls = answered = 0
    for sample, record in zip(result.samples, raw, strict=True):
        if sample.tools:
            assert [t["function"] for t in sample.tools] == json.loads(record["tools"])
        made = [
            json.loads(t["value"]) for t in record["conversations"] if t["from"] == "function_call"
        ]
        got = [m["tool_calls"][0] for m in sample.messages if "tool_calls" in m]
        assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in got] == [
            (call["name"], call["arguments"]) for call in made
        ]
        for before, message in zip(sample.messages, sample.messages[1:], strict=False):
            if message["role"] == "tool":
                assert message["tool_call_id"] == before["tool_calls"][0]["id"]
                answered += 1
        calls += len(got)
    assert (calls, answered) == (211, 211)
    tool_turns = [m for r in written for m in r["messages"] if "tool_calls" in m]
    assert all(set(m) == {"role", "tool_calls"} for m in tool_turns)  # no "content": null


def test_c4_demo(public_fixtures: Path, tmp_path: Path) -> None:
    result, written = load(public_fixtures, "c4_demo.jsonl", tmp_path)
    lines = (public_fixtures / "c4_demo.jsonl").read_text(encoding="utf-8").splitlines()
    assert written == [json.loads(line) for line in lines]
    assert [s.source for s in result.samples[:2]] == ["c4_demo.jsonl:1", "c4_demo.jsonl:2"]


def test_wiki_demo_is_one_text_per_line(public_fixtures: Path, tmp_path: Path) -> None:
    result, _ = load(public_fixtures, "wiki_demo.txt", tmp_path)
    lines = (public_fixtures / "wiki_demo.txt").read_text(encoding="utf-8").splitlines()
    assert [s.text for s in result.samples] == lines
    assert result.samples[29].source == "wiki_demo.txt:30"


# --- damaged copies ------------------------------------------------------------------------

TRUNCATED, BAD_UTF8, WRONG_TYPE = 2, 5, 9  # the damaged records (1-based)
WRONG: dict[str, tuple[Callable[[dict[str, Any]], dict[str, Any]], str]] = {
    "alpaca_en_demo.json": (lambda r: r | {"output": 42}, "'output' must be a string"),
    "identity.json": (
        lambda r: r | {"instruction": ["hi"]},
        "alpaca instruction/input must be strings",
    ),
    "dpo_en_demo.json": (lambda r: r | {"chosen": 7}, "'chosen' must be a non-empty list"),
    "kto_en_demo.json": (
        lambda r: r | {"label": "yes"},
        "'label' must be true or false, got 'yes'",
    ),
    "glaive_toolcall_en_demo.json": (
        lambda r: r | {"tools": {"name": "f"}},
        "'tools' must be a list of tool definitions",
    ),
    "c4_demo.jsonl": (lambda r: {"text": 123}, "'text' must be a string"),
}


def inside_a_string(line: str) -> int:
    """A cut point in a line's string value: a space (never inside an escape or a character)."""
    return line.index(" ", line.index(': "') + 4)


def damage_json_array(src: Path, dst: Path) -> list[tuple[str, str]]:
    """Truncate a line, put a non-UTF-8 byte in another, give a third a wrong type."""
    records = json.loads(src.read_text(encoding="utf-8"))
    mutate, wrong_reason = WRONG[src.name]
    records[WRONG_TYPE - 1] = mutate(records[WRONG_TYPE - 1])
    lines = json.dumps(records, indent=2, ensure_ascii=False).split("\n")
    starts = [i for i, line in enumerate(lines) if line == "  {"]

    def string_line(record: int) -> int:
        span = range(starts[record - 1], starts[record])
        return next(
            i for i in span if ': "' in lines[i] and " " in lines[i][lines[i].index(': "') + 4 :]
        )

    cut_at, bad_at = string_line(TRUNCATED), string_line(BAD_UTF8)
    cut = inside_a_string(lines[cut_at])
    lines[cut_at] = lines[cut_at][:cut]
    data = [line.encode() for line in lines]
    split = inside_a_string(lines[bad_at])
    data[bad_at] = data[bad_at][:split] + b"\xff" + data[bad_at][split:]  # ASCII before a space
    dst.write_bytes(b"\n".join(data))
    return [
        (
            f"{dst.name}:{TRUNCATED}",
            f"invalid JSON: Invalid control character at line {cut_at + 1} column {cut + 1}",
        ),
        (f"{dst.name}:{BAD_UTF8}", f"invalid UTF-8: byte 0xff at line {bad_at + 1}"),
        (f"{dst.name}:{WRONG_TYPE}", wrong_reason),
    ]


def damage_lines(src: Path, dst: Path) -> list[tuple[str, str]]:
    """The same three kinds of damage to a line format (TXT has no types to get wrong)."""
    lines = src.read_bytes().split(b"\n")
    cut = lines[TRUNCATED - 1].index(b" ", 40)
    lines[TRUNCATED - 1] = lines[TRUNCATED - 1][:cut]
    split = lines[BAD_UTF8 - 1].index(b" ", 40)
    lines[BAD_UTF8 - 1] = lines[BAD_UTF8 - 1][:split] + b"\xff" + lines[BAD_UTF8 - 1][split:]
    bad_utf8 = (f"{dst.name}:{BAD_UTF8}", f"invalid UTF-8: byte 0xff at byte {split + 1}")
    if src.suffix == ".txt":
        dst.write_bytes(b"\n".join(lines))
        return [bad_utf8]  # a truncated line of plain text is still text
    mutate, wrong_reason = WRONG[src.name]
    lines[WRONG_TYPE - 1] = json.dumps(mutate(json.loads(lines[WRONG_TYPE - 1]))).encode()
    dst.write_bytes(b"\n".join(lines))
    opening_quote = lines[TRUNCATED - 1].index(b': "') + 2
    return [
        (
            f"{dst.name}:{TRUNCATED}",
            f"invalid JSON: Unterminated string starting at column {opening_quote + 1}",
        ),
        bad_utf8,
        (f"{dst.name}:{WRONG_TYPE}", wrong_reason),
    ]


def run_convert(*args: str) -> str:
    app = typer.Typer()
    app.command()(convert)
    app.callback()(lambda: None)
    result = CliRunner().invoke(app, ["convert", *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("name", FIXTURES)
def test_a_damaged_copy_quarantines_exactly_the_bad_records(
    public_fixtures: Path, tmp_path: Path, name: str
) -> None:
    kind, count = FIXTURES[name]
    damaged = tmp_path / name
    damage = damage_json_array if name.endswith(".json") else damage_lines
    expected = damage(public_fixtures / name, damaged)
    result = read_dataset(damaged)
    assert [(q.source, q.reason) for q in result.quarantined] == expected
    bad = len(expected)
    assert result.books()["files"] == {
        name: {"read": count, "samples": count - bad, "quarantined": bad}
    }
    out = tmp_path / "out" / "converted.jsonl"
    printed = run_convert(str(damaged), "-o", str(out))
    assert printed.splitlines() == [
        f"read {count}: converted {count - bad} ({kind} {count - bad}), quarantined {bad} -> {out}",
        f"quarantine: {out.parent / 'converted.quarantine.jsonl'}",
    ]
    quarantine = [json.loads(line) for line in quarantine_path(out).read_text().splitlines()]
    assert [(q["source"], q["reason"]) for q in quarantine] == expected
    assert len(out.read_text(encoding="utf-8").splitlines()) == count - bad
    with pytest.raises(DataError, match=f"^{expected[0][0]}: "):
        read_dataset(damaged, strict=True)


# --- containers and the command ------------------------------------------------------------


@pytest.mark.slow
def test_the_same_records_read_alike_from_every_container(
    public_fixtures: Path, tmp_path: Path
) -> None:
    import gzip

    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    raw = raw_json(public_fixtures, "alpaca_en_demo.json")
    expected = [
        strip_origin(s) for s in read_dataset(public_fixtures / "alpaca_en_demo.json").samples
    ]
    with open(tmp_path / "a.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["instruction", "input", "output"])
        writer.writeheader()
        writer.writerows(raw)
    pq.write_table(pa.Table.from_pylist(raw), tmp_path / "a.parquet")
    (tmp_path / "a.jsonl.gz").write_bytes(
        gzip.compress("".join(json.dumps(r) + "\n" for r in raw).encode())
    )
    datasets.Dataset.from_list(raw).save_to_disk(str(tmp_path / "a_saved"))
    head = io.StringIO()  # a CSV record's position is the line its row starts on
    csv.DictWriter(head, ["instruction", "input", "output"]).writerows(raw[:998])
    last_row_line = 1 + head.getvalue().count("\n") + 1
    for name in ("a.csv", "a.parquet", "a.jsonl.gz", "a_saved"):
        samples = read_dataset(tmp_path / name).samples
        assert [strip_origin(s) for s in samples] == expected, name
        assert samples[998].source == f"{name}:{last_row_line if name == 'a.csv' else 999}"
    assert last_row_line == 6917  # multi-line cells: rows and lines differ

    c4 = read_dataset(public_fixtures / "c4_demo.jsonl").samples
    rows = [{"text": s.text} for s in c4]
    splits = datasets.DatasetDict(
        train=datasets.Dataset.from_list(rows[:200]), test=datasets.Dataset.from_list(rows[200:])
    )
    splits.save_to_disk(str(tmp_path / "folder" / "c4"))
    (tmp_path / "folder" / "b.txt").write_text("one line\n")
    result = read_dataset(tmp_path / "folder")
    assert result.books()["files"] == {
        "b.txt": {"read": 1, "samples": 1, "quarantined": 0},
        "c4/test": {"read": 100, "samples": 100, "quarantined": 0},
        "c4/train": {"read": 200, "samples": 200, "quarantined": 0},
    }
    assert [s.text for s in result.samples[1:]] == [r["text"] for r in rows[200:] + rows[:200]]
    assert result.samples[1].source == "c4/test:1"


def test_a_directory_of_all_fixtures_keeps_books_per_file(public_fixtures: Path) -> None:
    result = read_dataset(public_fixtures)
    assert {name: books["read"] for name, books in result.books()["files"].items()} == {
        name: count for name, (_, count) in FIXTURES.items()
    }
    assert result.kinds() == {"chat": 1390, "preference": 300, "unpaired": 300, "text": 330}
    assert result.quarantined == []


def test_convert_with_a_named_format_and_a_field_mapping(tmp_path: Path) -> None:
    rows = [{"q": "2+2?", "a": "4"}, {"q": "", "a": "x"}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "d.openai.jsonl"
    printed = run_convert(
        str(tmp_path / "d.jsonl"),
        "-o",
        str(out),
        "--format",
        "alpaca",
        "--map",
        "instruction=q",
        "--map",
        "output=a",
    )
    assert printed.splitlines()[0] == f"read 2: converted 1 (chat 1), quarantined 1 -> {out}"
    assert json.loads(out.read_text()) == {
        "messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    }
    quarantined = json.loads(quarantine_path(out).read_text())
    assert quarantined == {
        "source": "d.jsonl:2",
        "reason": "empty instruction",
        "raw": json.dumps(rows[1]),
    }


def test_convert_helpers_and_refusals(tmp_path: Path) -> None:
    assert parse_mapping(["instruction=question", " output = answer "]) == {
        "instruction": "question",
        "output": "answer",
    }
    with pytest.raises(DataError, match="--map 'instruction': expected OUR_FIELD=YOUR_COLUMN"):
        parse_mapping(["instruction"])
    assert quarantine_path(Path("o/out.jsonl.gz")) == Path("o/out.quarantine.jsonl")
    with pytest.raises(DataError, match="is the input; choose another output file"):
        convert(tmp_path / "d.jsonl", tmp_path / "d.jsonl")
