"""The data stage end to end on the bundled example: streamed, split, rendered, packed, hashed."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from tuneforge.config.schema import DataConfig
from tuneforge.data.configure import build_steps
from tuneforge.data.prepare import prepare_data, read_split, read_tokens
from tuneforge.data.readers import read_dataset
from tuneforge.data.split import split_samples
from tuneforge.data.steps import run_steps
from tuneforge.errors import ConfigError, DataError
from tuneforge.runs.hashing import file_sha256
from tuneforge.train.loss import IGNORE_INDEX

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "data" / "support_tickets.jsonl"
BAD_LINES = [b"{not json", b'{"messages": "nope"}', b"\xff\xfe broken utf-8"]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 example records with three bad lines among them."""
    lines = EXAMPLE.read_bytes().splitlines()[:297]
    for offset, bad in enumerate(BAD_LINES):
        lines.insert(50 + offset * 100, bad)
    path = tmp_path_factory.mktemp("data") / "tickets.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.fixture(scope="module")
def prepared(data_file: Path, chat_tokenizer, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("prepared")
    config = DataConfig(path=str(data_file), max_length=256, pack_length=512)
    return config, prepare_data(config, chat_tokenizer, seed=3, out_dir=out), out


def test_books_balance_and_quarantine_holds_exactly_the_bad_lines(prepared) -> None:
    _, books, out = prepared
    assert books["read"] == 300
    assert books["read"] == books["kept"] + sum(books["dropped"].values()) + books["quarantined"]
    quarantined = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    assert [q["source"] for q in quarantined] == [
        "tickets.jsonl:51",
        "tickets.jsonl:151",
        "tickets.jsonl:251",
    ]
    assert books["quarantined"] == 3
    assert not (out / ".work").exists()  # the spill file is gone


def test_streamed_splits_equal_the_in_memory_split(
    prepared, data_file: Path, chat_tokenizer
) -> None:
    config, books, out = prepared
    assert "no_trained_tokens_within_max_length" not in books["dropped"]
    kept, _ = run_steps(read_dataset(data_file).samples, build_steps(config, chat_tokenizer))
    expected = split_samples(kept, config.val_fraction, config.test_fraction, seed=3)
    for split in ("val", "test"):
        assert [r["id"] for r in read_split(out, split)] == [s.id for s in expected[split]]
    train_ids = [r["id"] for r in read_split(out, "train")]
    dropped = books["dropped"].get("contaminated", 0)
    assert len(train_ids) == len(expected["train"]) - dropped
    assert set(train_ids) <= {s.id for s in expected["train"]}


def test_packed_rows_hold_exactly_the_token_rows(prepared) -> None:
    config, books, out = prepared
    ids, labels = read_tokens(out, "train")
    packed = pq.read_table(out / "packed" / "train.parquet").to_pylist()
    pieces = []
    for row in packed:
        assert len(row["input_ids"]) == len(row["labels"]) == len(row["position_ids"])
        assert len(row["input_ids"]) <= 512 == config.pack_length
        start = 0
        for length in row["lengths"]:
            assert row["position_ids"][start : start + length] == list(range(length))
            assert row["labels"][start] == IGNORE_INDEX
            pieces.append(
                (
                    tuple(row["input_ids"][start : start + length]),
                    tuple(row["labels"][start + 1 : start + length]),
                )
            )
            start += length
        assert start == len(row["input_ids"])
    unpacked = [(tuple(i), tuple(lab[1:])) for i, lab in zip(ids, labels, strict=True)]
    assert Counter(pieces) == Counter(unpacked)
    figures = books["packing"]["train"]
    assert figures["rows"] == len(packed) and figures["samples"] == len(ids)
    assert figures["efficiency"] == round(sum(map(len, ids)) / (len(packed) * 512), 4)
    assert figures["efficiency"] > 0.9  # short samples fill the rows almost completely


def test_outputs_are_hashed_loadable_and_reported(prepared) -> None:
    _, books, out = prepared
    assert set(books["outputs"]) >= {
        "quarantine.jsonl",
        "samples/train.jsonl",
        "tokens/train.parquet",
        "packed/train.parquet",
        "packed/val.parquet",
    }
    for name, digest in books["outputs"].items():
        assert file_sha256(out / name) == digest
    datasets = pytest.importorskip("datasets")
    table = datasets.load_dataset("parquet", data_files=str(out / "tokens" / "train.parquet"))
    assert table["train"].num_rows == books["splits"]["train"]
    report = (out / "report.md").read_text()
    assert "## Packing" in report and f"{books['packing']['train']['efficiency']:.1%}" in report


def test_packing_can_be_switched_off(data_file: Path, chat_tokenizer, tmp_path: Path) -> None:
    config = DataConfig(path=str(data_file), max_samples=80, packing=False)
    books = prepare_data(config, chat_tokenizer, seed=3, out_dir=tmp_path)
    assert books["packing"] == {}
    assert not list((tmp_path / "packed").glob("*.parquet"))


def test_rows_shorter_than_max_length_are_refused() -> None:
    with pytest.raises(ValidationError, match="pack_length 64 is shorter than max_length 128"):
        DataConfig(path="x", max_length=128, pack_length=64)


TOXIC_SCORER = """
def score(text):
    return 0.9 if "refund" in text.lower() else 0.1

def broken(text):
    return "high"
"""


def test_toxicity_classifier_hook_drops_what_it_scores_high(
    data_file: Path, chat_tokenizer, tmp_path: Path
) -> None:
    (data_file.parent / "scorer.py").write_text(TOXIC_SCORER)
    config = DataConfig(
        path=str(data_file),
        max_samples=120,
        clean={"toxicity_classifier": "scorer:score", "toxicity_threshold": 0.5},
    )
    books = prepare_data(config, chat_tokenizer, seed=3, out_dir=tmp_path)
    texts = [
        json.dumps(r["messages"]).lower()
        for s in ("train", "val", "test")
        for r in read_split(tmp_path, s)
    ]
    assert books["dropped"]["toxicity"] > 0
    assert not any("refund" in text for text in texts)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("scorer", "is not module:function"),
        ("no_such_module_here:score", "cannot import 'no_such_module_here'"),
        ("scorer:missing", "has no function 'missing'"),
        ("scorer:broken", "returned 'high'; it must return a score between 0 and 1"),
    ],
)
def test_toxicity_classifier_errors_name_the_key(
    data_file: Path, chat_tokenizer, tmp_path: Path, spec: str, message: str
) -> None:
    (data_file.parent / "scorer.py").write_text(TOXIC_SCORER)
    config = DataConfig(path=str(data_file), max_samples=20, clean={"toxicity_classifier": spec})
    with pytest.raises(DataError, match=r"data\.clean\.toxicity_classifier") as caught:
        prepare_data(config, chat_tokenizer, seed=3, out_dir=tmp_path)
    assert message in str(caught.value)


def test_pii_types_and_presidio_come_from_the_config(tmp_path: Path) -> None:
    from tuneforge.data.pii import PiiStep

    steps = build_steps(DataConfig(path="x", pii={"types": ["email"]}))
    (pii,) = [s for s in steps if isinstance(s, PiiStep)]
    text = "mail ann@example.com or call +44 20 7946 0958"
    assert [f.type for f in pii.find(text)] == ["email"]
    everything = [s for s in build_steps(DataConfig(path="x")) if isinstance(s, PiiStep)]
    assert [f.type for f in everything[0].find(text)] == ["email", "phone"]
    with pytest.raises(ConfigError, match=r"data\.pii\.types: unknown \['mail'\]"):
        build_steps(DataConfig(path="x", pii={"types": ["mail"]}))
    try:
        import presidio_analyzer  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match=r"data\.pii\.presidio: presidio-analyzer is not"):
            build_steps(DataConfig(path="x", pii={"presidio": True}))


def _chat_line(user: str, reply: str = "Routed to the billing team.") -> bytes:
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    return json.dumps({"messages": messages}).encode()


LEAKED = "the quick brown fox jumps over the lazy dog while seven wizards quietly judge every box"
LONG_TICKET = " ".join(f"{w}{i % 7}" for i, w in enumerate(LEAKED.split() * 2))
DROPPED_RECORDS = {  # appended after 40 example records and a bad line: (line, (step, reason))
    "exact copy": (EXAMPLE.read_bytes().splitlines()[0], ("exact_dedup", "exact_duplicate")),
    "original": (_chat_line(LONG_TICKET), None),
    "near copy": (_chat_line(LONG_TICKET + "?!"), ("near_dedup", "near_duplicate")),
    "pii": (_chat_line("Please reach me at ann.lee@example.org today."), ("pii", "pii:email")),
    "symbols": (_chat_line("Help?", "$$$ %%% ^^^ &&& *** ### @@@ !!!"), ("quality", "symbols")),
    "leaked": (_chat_line(f"Is it true that {LEAKED}?"), ("decontaminate", "contaminated")),
    "too long": (
        _chat_line(" ".join(f"{w}{i}" for i, w in enumerate(LEAKED.split() * 25))),
        ("render", "no_trained_tokens_within_max_length"),
    ),
}


def test_dropped_jsonl_lists_every_dropped_sample_with_step_and_reason(
    chat_tokenizer, tmp_path: Path
) -> None:
    lines = [*EXAMPLE.read_bytes().splitlines()[:40], BAD_LINES[0]]
    lines += [line for line, _ in DROPPED_RECORDS.values()]
    path = tmp_path / "tickets.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "bench.txt").write_text(LEAKED + "\n")
    config = DataConfig(
        path=str(path),
        max_length=256,
        val_fraction=0,
        test_fraction=0,
        pii={"mode": "drop"},
        decontaminate={"benchmarks": ["bench.txt"]},
    )
    out = tmp_path / "out"
    books = prepare_data(config, chat_tokenizer, seed=3, out_dir=out)
    dropped = [json.loads(line) for line in (out / "dropped.jsonl").read_text().splitlines()]
    assert books["read"] == books["kept"] + sum(books["dropped"].values()) + books["quarantined"]
    assert len(dropped) == sum(books["dropped"].values())
    listed = Counter((d["step"], d["reason"]) for d in dropped)
    counted = Counter({(s["name"], r): n for s in books["steps"] for r, n in s["dropped"].items()})
    assert listed == counted
    by_source = {d["source"]: d for d in dropped}
    for line, (name, (_, expected)) in enumerate(DROPPED_RECORDS.items(), start=42):
        found = by_source.get(f"tickets.jsonl:{line}")
        assert (found and (found["step"], found["reason"])) == expected, name
    assert by_source["tickets.jsonl:45"]["excerpt"].startswith("user: Please reach me at ann")
    assert all(len(d["excerpt"]) <= 300 and d["id"] for d in dropped)
    assert books["outputs"]["dropped.jsonl"] == file_sha256(out / "dropped.jsonl")
    assert "dropped samples listed in dropped.jsonl" in (out / "report.md").read_text()
