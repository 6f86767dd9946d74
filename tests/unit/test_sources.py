"""File types, directories, positions, and what cannot be parsed: every record is counted."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from tuneforge.data.readers import iter_samples, read_dataset
from tuneforge.errors import DataError

U, A = "user", "assistant"
QA = [{"role": U, "content": "q"}, {"role": A, "content": "a"}]


def msg(role: str, content: Any) -> dict[str, Any]:
    return {"role": role, "content": content}


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


CHAT = {"messages": [msg(U, "hi"), msg(A, "hello")]}


def test_jsonl_gz_json_gz_json_lines_under_a_json_name_and_a_bom(tmp_path: Path) -> None:
    lines = "".join(json.dumps({"text": t}) + "\n" for t in "abc").encode()
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(lines))
    (tmp_path / "b.json.gz").write_bytes(gzip.compress(json.dumps([{"text": "d"}]).encode()))
    (tmp_path / "c.json").write_bytes(lines)
    (tmp_path / "d.jsonl").write_bytes(b"\xef\xbb\xbf" + lines)
    texts = {p.name: [s.text for s in read_dataset(p).samples] for p in tmp_path.iterdir()}
    abc = ["a", "b", "c"]
    assert texts == {"a.jsonl.gz": abc, "b.json.gz": ["d"], "c.json": abc, "d.jsonl": abc}


def test_a_truncated_gzip_stream_is_one_quarantined_record(tmp_path: Path) -> None:
    data = gzip.compress("".join(json.dumps({"text": str(i)}) + "\n" for i in range(2000)).encode())
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    result = read_dataset(path)
    assert 0 < len(result.samples) < 2000
    assert [q.source for q in result.quarantined] == [f"d.jsonl.gz:{len(result.samples) + 1}"]
    assert result.quarantined[0].reason.startswith("corrupt gzip stream")


@pytest.mark.parametrize(
    ("value", "records"),
    [
        (
            {"data": [{"text": "a"}, {"text": "b"}]},
            [("d.json:1", "d.json:1"), ("d.json:2", "d.json:2")],
        ),
        ({"x1": {"text": "a"}, "x2": {"text": "b"}}, [("x1", "d.json:1"), ("x2", "d.json:2")]),
        ({"text": "a"}, [("d.json:1", "d.json:1")]),
    ],
    ids=["wrapped-list", "keyed-by-id", "single-record"],
)
def test_json_objects_of_records(tmp_path: Path, value: Any, records: list[tuple]) -> None:
    (tmp_path / "d.json").write_text(json.dumps(value, indent=2))
    assert [(s.id, s.source) for s in read_dataset(tmp_path / "d.json").samples] == records


def test_broken_records_of_a_json_array_are_quarantined_alone(tmp_path: Path) -> None:
    pretty = json.dumps([{"text": "one"}, {"text": "two words"}, {"text": "three"}], indent=2)
    pretty = pretty.replace('"two words"', '"two')  # a truncated line inside record 2
    (tmp_path / "p.json").write_text(pretty)
    compact = '[{"text": "a"}, {"text": "b, {"text": "c"}, {"text": "d"} {"text": "e"}]'
    (tmp_path / "t.json").write_text('[{"text": "a"}] x')
    (tmp_path / "c.json").write_text(compact)
    pretty_result, compact_result = (read_dataset(tmp_path / n) for n in ("p.json", "c.json"))
    assert [s.text for s in pretty_result.samples] == ["one", "three"]
    assert [(q.source, q.reason, q.raw) for q in pretty_result.quarantined] == [
        (
            "p.json:2",
            "invalid JSON: Invalid control character at line 6 column 17",
            '{\n    "text": "two\n  }',
        ),
    ]
    assert [s.text for s in compact_result.samples] == ["a", "c"]
    assert [(q.source, q.reason, q.raw) for q in compact_result.quarantined] == [
        ("c.json:2", "invalid JSON: Expecting ',' delimiter at line 1 column 32", '{"text": "b'),
        (
            "c.json:4",
            "invalid JSON: Expecting ',' delimiter at line 1 column 59",
            '{"text": "d"} {"text": "e"}',
        ),
    ]
    assert [(q.source, q.reason, q.raw) for q in read_dataset(tmp_path / "t.json").quarantined] == [
        ("t.json:2", "invalid JSON: data after the array", "x")
    ]


def test_csv_rows_with_json_cells_multiline_cells_and_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "answer", "history"])
        writer.writerow(["2+2?", "4", ""])
        writer.writerow(["two\nlines", "ok", json.dumps([["hi", "hello"]])])
        writer.writerow(["short row"])
    with open(path, "ab") as handle:
        handle.write(b"caf\xe9,x,\n")
    result = read_dataset(path, mapping={"instruction": "question", "output": "answer"})
    assert [s.source for s in result.samples] == ["d.csv:2", "d.csv:3"]
    assert result.samples[1].messages == [
        msg(U, "hi"),
        msg(A, "hello"),
        msg(U, "two\nlines"),
        msg(A, "ok"),
    ]
    assert [(q.source, q.reason, q.raw) for q in result.quarantined] == [
        ("d.csv:5", "row has 1 fields, the header has 3", "short row"),
        ("d.csv:6", "invalid UTF-8 in the row", "caf\ufffd,x,"),
    ]


def test_tsv_parquet_and_txt(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "d.tsv").write_text("text\tlabel\nhello, world\tx\n")
    rows = [{"messages": QA, "label": True, "text": None}, {"text": "t"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")  # nulls fill the gaps
    (tmp_path / "d.txt").write_bytes(b"first line\r\n\n  \nsecond\xff line\nthird\n")
    tsv, parquet, txt = (read_dataset(tmp_path / f"d.{s}") for s in ("tsv", "parquet", "txt"))
    assert [s.text for s in tsv.samples] == ["hello, world"]
    assert [(s.kind, s.source) for s in parquet.samples] == [
        ("unpaired", "d.parquet:1"),
        ("text", "d.parquet:2"),
    ]
    assert [(s.text, s.source) for s in txt.samples] == [
        ("first line", "d.txt:1"),
        ("third", "d.txt:5"),
    ]
    assert [(q.source, q.reason) for q in txt.quarantined] == [
        ("d.txt:4", "invalid UTF-8: byte 0xff at byte 7")
    ]


def test_a_directory_is_read_in_sorted_order_with_books_per_file(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "b.jsonl", [CHAT, {"foo": 1}])
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("one\ntwo\n")
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "README.md").write_text("# notes")
    (tmp_path / ".hidden.jsonl").write_text("{")
    result = read_dataset(tmp_path)
    assert [s.source for s in result.samples] == ["b.jsonl:1", "sub/a.txt:1", "sub/a.txt:2"]
    assert result.books()["files"] == {
        "b.jsonl": {"read": 2, "samples": 1, "quarantined": 1},
        "empty.jsonl": {"read": 0, "samples": 0, "quarantined": 0},
        "sub/a.txt": {"read": 2, "samples": 2, "quarantined": 0},
    }
    assert result.skipped == ["README.md"]
    assert (
        list(iter_samples(tmp_path)) == result.samples[:1] + result.quarantined + result.samples[1:]
    )
    assert read_dataset(tmp_path, limit=2).books()["files"] == {
        "b.jsonl": {"read": 2, "samples": 1, "quarantined": 1}
    }


def test_strict_raises_on_the_first_bad_record(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [CHAT, {"messages": [msg(U, "q")]}, "x"])
    with pytest.raises(DataError, match=r"^d.jsonl:2: no assistant turn; fix the record"):
        read_dataset(path, strict=True)


def test_unknown_file_types_are_named(tmp_path: Path) -> None:
    (tmp_path / "d.xlsx").write_bytes(b"PK")
    with pytest.raises(DataError, match=r"d.xlsx'.*unknown file type"):
        read_dataset(tmp_path / "d.xlsx")
    with pytest.raises(DataError, match="no records in the directory"):
        read_dataset(tmp_path)
