"""The data stage for the preference and RL objectives: pairs, unpaired rows, prompts, ranked."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import typer
from typer.testing import CliRunner

from tuneforge.cli.data_convert import convert
from tuneforge.config.schema import DataConfig
from tuneforge.data.formats import detect_format, to_sample, to_samples
from tuneforge.data.prepare import prepare_data, read_split, read_tokens
from tuneforge.data.readers import iter_samples, read_dataset
from tuneforge.data.render import render_chat, render_prompt, render_prompt_batch
from tuneforge.data.shards import read_pairs, read_prompts, read_unpaired
from tuneforge.errors import DataError
from tuneforge.runs.hashing import file_sha256
from tuneforge.train.loss import IGNORE_INDEX

SPLITS = ("train", "val", "test")
END = "<|im_end|>"
IDS = pa.list_(pa.int32())
# Long enough for every reply of the public fixtures in the tiny 600-token vocabulary.
ROOMY = 16384


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def prepare(path: Path, tokenizer, out: Path, objective: str, **data: Any) -> dict[str, Any]:
    config = DataConfig(path=str(path), packing=False, **data)
    return prepare_data(config, tokenizer, seed=0, out_dir=out, objective=objective)


def balanced(books: dict[str, Any]) -> bool:
    accounted = books["kept"] + sum(books["dropped"].values()) + books["quarantined"]
    return books["read"] + books["expanded"] == accounted


def records(out: Path) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for split in SPLITS for r in read_split(out, split)}


def trained_span(tokenizer, input_ids: list[int], labels: list[int]) -> tuple[int, int, str]:
    """(first, end) of the positions that carry loss, checked contiguous, and their text."""
    positions = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    first, end = positions[0], positions[-1] + 1
    assert positions == list(range(first, end))
    assert labels[first:end] == input_ids[first:end]
    return first, end, tokenizer.decode(input_ids[first:end])


def final_reply(messages: list[dict[str, Any]]) -> str:
    return [m for m in messages if m["role"] == "assistant"][-1]["content"]


# --- pairs (reward, dpo, orpo, simpo) ---------------------------------------------------------


def test_dpo_pairs_train_exactly_the_final_replies(
    public_fixtures: Path, chat_tokenizer, tmp_path: Path
) -> None:
    books = prepare(
        public_fixtures / "dpo_en_demo.json", chat_tokenizer, tmp_path, "dpo", max_length=ROOMY
    )
    assert books["read"] == 300 and books["expanded"] == 0 and balanced(books)
    assert "no_trained_tokens_within_max_length" not in books["dropped"]
    assert books["pairs"] == books["splits"]
    assert sum(books["pairs"].values()) == books["kept"] == 300 - sum(books["dropped"].values())
    kept = records(tmp_path)
    checked = 0
    for split in SPLITS:
        table = read_pairs(tmp_path, split)
        assert table.schema.names == [
            "id",
            "chosen_input_ids",
            "chosen_labels",
            "rejected_input_ids",
            "rejected_labels",
            "margin",
        ]
        assert table.schema.field("chosen_labels").type == IDS
        assert table.schema.field("margin").type == pa.float32()
        token_ids, _ = read_tokens(tmp_path, split)
        rows = table.to_pylist()
        assert [r["id"] for r in rows] == [r["id"] for r in read_split(tmp_path, split)]
        assert token_ids == [r["chosen_input_ids"] for r in rows]  # tokens/ holds the chosen rows
        for row in rows:
            record = kept[row["id"]]
            prompt = render_prompt(chat_tokenizer, record["input"]["messages"])
            for side, key in (("chosen", "preferred_output"), ("rejected", "non_preferred_output")):
                ids, labels = row[f"{side}_input_ids"], row[f"{side}_labels"]
                assert len(ids) == len(labels) < ROOMY
                assert ids[: len(prompt)] == prompt
                first, _, text = trained_span(chat_tokenizer, ids, labels)
                assert first == len(prompt)
                assert text == final_reply(record[key]) + END
            assert row["margin"] == 0.0
            checked += 1
    assert checked == books["kept"]
    for name in ("pairs/train.parquet", "pairs/val.parquet", "pairs/test.parquet"):
        assert books["outputs"][name] == file_sha256(tmp_path / name)
    report = (tmp_path / "report.md").read_text()
    assert "## Training rows (pairs/<split>.parquet)" in report
    assert f"| train | {books['pairs']['train']} |" in report


PROMPT = "Tell me about the harbour town where the ferries leave at dawn."


def pair(prompt: str, chosen: Any, rejected: Any, **extra: Any) -> dict[str, Any]:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, **extra}


FERRY = [
    {"role": "user", "content": "What is the ferry timetable for the islands?"},
    {"role": "assistant", "content": "Every hour from six."},
]


def test_pairs_that_do_not_fit_are_dropped_and_margins_kept(chat_tokenizer, tmp_path: Path) -> None:
    long_turn = " ".join(f"wave{i}" for i in range(150))  # varied, so no quality rule drops it
    data = write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            pair(PROMPT, "Fishing boats and a market.", "No idea.", margin=2.5),
            pair(PROMPT + " " + long_turn, "It is quiet.", "It is loud."),  # prompt fills it
            pair(  # chosen fits; the rejected final reply comes after a long turn
                FERRY[0]["content"],
                FERRY[1]["content"],
                [
                    {"role": "assistant", "content": long_turn},
                    {"role": "user", "content": "And in winter?"},
                    {"role": "assistant", "content": "Twice a day."},
                ],
            ),
            pair(
                "Which bakery opens first near the pier?", "The blue one.", "Maybe.", margin="high"
            ),
            pair("Where do the fishermen mend their nets?", "On the quay.", "Inside.", margin="-1"),
        ],
    )
    books = prepare(
        data,
        chat_tokenizer,
        tmp_path / "out",
        "reward",
        max_length=96,
        val_fraction=0,
        test_fraction=0,
    )
    assert books["read"] == 5 and balanced(books)
    assert books["quarantined"] == 1
    assert books["dropped"] == {"no_trained_tokens_within_max_length": 2}
    (render,) = [s for s in books["steps"] if s["name"] == "render"]
    assert render["dropped"] == {"no_trained_tokens_within_max_length": 2}
    chosen_alone = render_chat(chat_tokenizer, FERRY, max_length=96, train_on="last_assistant")
    assert chosen_alone.trained_tokens > 0  # that pair went for its rejected side
    rows = read_pairs(tmp_path / "out", "train").to_pylist()
    assert [(r["id"], r["margin"]) for r in rows] == [
        ("pairs.jsonl:1", 2.5),
        ("pairs.jsonl:5", -1.0),
    ]
    (quarantined,) = [json.loads(line) for line in (tmp_path / "out" / "quarantine.jsonl").open()]
    assert quarantined["source"] == "pairs.jsonl:4"
    assert quarantined["reason"] == "'margin' must be a finite number, got 'high'"


# --- unpaired (kto) ----------------------------------------------------------------------------


def test_kto_writes_unpaired_rows_with_their_labels(
    public_fixtures: Path, chat_tokenizer, tmp_path: Path
) -> None:
    path = public_fixtures / "kto_en_demo.json"
    books = prepare(path, chat_tokenizer, tmp_path, "kto", max_length=ROOMY)
    assert books["read"] == 300 and balanced(books)
    kept = records(tmp_path)
    raw = json.loads(path.read_text(encoding="utf-8"))
    labels_by_id = {f"kto_en_demo.json:{i}": r["label"] for i, r in enumerate(raw, 1)}
    for split in SPLITS:
        table = read_unpaired(tmp_path, split)
        assert table.schema.names == ["id", "input_ids", "labels", "label"]
        assert table.schema.field("label").type == pa.bool_()
        rows = table.to_pylist()
        ids = [r["id"] for r in read_split(tmp_path, split)]
        assert [r["id"] for r in rows] == ids  # one row per sample, in order
        assert [r["label"] for r in rows] == [labels_by_id[i] for i in ids]
        counts = Counter(r["label"] for r in rows)
        assert books["unpaired"][split] == {"desirable": counts[True], "undesirable": counts[False]}
        token_ids, _ = read_tokens(tmp_path, split)
        assert token_ids == [r["input_ids"] for r in rows if r["label"]]  # desirable only
        for row in rows:
            *_, text = trained_span(chat_tokenizer, row["input_ids"], row["labels"])
            assert text == final_reply(kept[row["id"]]["messages"]) + END
    desirable = sum(books["unpaired"][s]["desirable"] for s in SPLITS)
    undesirable = sum(books["unpaired"][s]["undesirable"] for s in SPLITS)
    assert desirable + undesirable == books["kept"]
    assert desirable == sum(labels_by_id[i] for i in kept)
    assert 140 <= desirable <= 150 and 140 <= undesirable <= 150  # the fixture has 150 of each


def test_kto_takes_each_pair_as_two_unpaired_rows(
    public_fixtures: Path, chat_tokenizer, tmp_path: Path
) -> None:
    books = prepare(
        public_fixtures / "dpo_en_demo.json", chat_tokenizer, tmp_path, "kto", max_length=ROOMY
    )
    assert books["read"] == 300 and balanced(books)
    for split in SPLITS:
        n = books["splits"][split]
        assert books["unpaired"][split] == {"desirable": n, "undesirable": n}
        rows = read_unpaired(tmp_path, split).to_pylist()
        assert len(rows) == 2 * n
        by_id: dict[str, list[bool]] = {}
        for row in rows:
            by_id.setdefault(row["id"], []).append(row["label"])
        assert list(by_id.values()) == [[True, False]] * n
        samples = {r["id"]: r for r in read_split(tmp_path, split)}
        for row in rows:
            side = "preferred_output" if row["label"] else "non_preferred_output"
            *_, text = trained_span(chat_tokenizer, row["input_ids"], row["labels"])
            assert text == final_reply(samples[row["id"]][side]) + END
        token_ids, _ = read_tokens(tmp_path, split)
        assert token_ids == [r["input_ids"] for r in rows if r["label"]]


# --- prompts (grpo, rloo) ----------------------------------------------------------------------

TOOLS = [{"type": "function", "function": {"name": "tide", "parameters": {"type": "object"}}}]
TOWNS = ["Alderney", "Brixham", "Cromer", "Dartmouth", "Eyemouth", "Fowey", "Girvan", "Hythe"]


def chat_records() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, town in enumerate(TOWNS):
        messages = [
            {"role": "system", "content": f"You guide visitors around {town}."},
            {"role": "user", "content": f"What should I see first in {town}?"},
            {"role": "assistant", "content": f"Start at the {town} harbour wall."},
        ]
        if i % 2:
            messages += [
                {"role": "user", "content": f"And after the harbour in {town}?"},
                {"role": "assistant", "content": f"Walk the {town} cliff path."},
            ]
        out.append({"messages": messages, **({"tools": TOOLS} if i == 3 else {})})
    out.append(pair("Which town has the oldest pier?", "Probably Hythe.", "Nowhere."))
    out.append({"text": "A plain paragraph about boats, not used by online RL."})
    long_prompt = " ".join(f"word{i}" for i in range(200))
    out.append({"messages": [{"role": "user", "content": long_prompt}, QUIET]})
    return out


QUIET = {"role": "assistant", "content": "Quiet."}


def test_grpo_writes_prompts_and_their_reference_replies(chat_tokenizer, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "chats.jsonl", chat_records())
    books = prepare(
        data,
        chat_tokenizer,
        tmp_path / "out",
        "grpo",
        max_length=128,
        val_fraction=0,
        test_fraction=0,
        dedup={"exact": False, "near": False},
        pii={"mode": "off"},
    )
    assert books["read"] == 11 and balanced(books)
    assert books["dropped"] == {"kind_text_not_used_for_prompts": 1, "prompt_too_long": 1}
    assert books["prompts"] == {"train": 9, "val": 0, "test": 0}
    table = read_prompts(tmp_path / "out", "train")
    assert table.schema.names == ["id", "prompt_ids", "prompt", "tools", "reference"]
    assert table.schema.field("prompt_ids").type == IDS
    rows = table.to_pylist()
    assert [r["id"] for r in rows] == [f"chats.jsonl:{i}" for i in range(1, 10)]
    for row, source in zip(rows, chat_records(), strict=False):
        if "messages" in source:
            messages, reference = source["messages"][:-1], source["messages"][-1]["content"]
        else:
            messages, reference = [{"role": "user", "content": source["prompt"]}], source["chosen"]
        tools = source.get("tools")
        assert json.loads(row["prompt"]) == messages
        assert row["prompt_ids"] == render_prompt(chat_tokenizer, messages, tools=tools)
        assert row["reference"] == reference
        assert row["tools"] == (json.dumps(TOOLS) if tools else "")
    assert rows[1]["reference"] == "Walk the Brixham cliff path."  # the final reply
    token_ids, _ = read_tokens(tmp_path / "out", "train")
    assert len(token_ids) == 9  # the chats as for sft, the pair's chosen row


def test_render_prompt_batch_equals_render_prompt(chat_tokenizer) -> None:
    conversations = [
        ([{"role": "user", "content": "Hello there."}], None),
        (chat_records()[3]["messages"][:-1], TOOLS),
        ([], None),
    ]
    batch = render_prompt_batch(chat_tokenizer, conversations)
    singles = [render_prompt(chat_tokenizer, m, tools=t) for m, t in conversations]
    assert batch == singles and batch[2] == [] and len(batch[1]) > len(batch[0]) > 0
    fallback = [
        render_prompt(chat_tokenizer, m, tools=t, template="alpaca") for m, t in conversations
    ]
    assert render_prompt_batch(chat_tokenizer, conversations, "alpaca") == fallback != singles


# --- ranked responses --------------------------------------------------------------------------


def ranked_records() -> list[dict[str, Any]]:
    return [
        {"prompt": "Name a harbour.", "responses": ["Brixham harbour.", "A harbour.", "Water."]},
        {
            "id": "r2",
            "prompt": "Name a lighthouse.",
            "responses": ["Eddystone.", "Bishop Rock.", "Some light."],
            "ranking": [1, 0, 2],
        },
        {
            "messages": [{"role": "user", "content": "Name a pier."}],
            "responses": [
                {"text": "Southend pier.", "rank": 1},
                {"content": "Brighton pier.", "rank": 1},
                {"content": "A pier.", "rank": 2},
                {"content": "Pier.", "rank": 2},
            ],
        },
        {"prompt": "Name a beach.", "responses": ["Only one answer."]},
        {
            "prompt": "Name a cove.",
            "responses": [{"content": "A", "rank": 1}, {"content": "B", "rank": 1}],
        },
        {"prompt": "Name a bay.", "responses": ["Bay one.", "Bay two."], "ranking": [1, 2]},
    ]


PAIRS = [
    ("ranked.jsonl:1#1", "Brixham harbour.", "A harbour."),
    ("ranked.jsonl:1#2", "Brixham harbour.", "Water."),
    ("r2#1", "Bishop Rock.", "Eddystone."),
    ("r2#2", "Bishop Rock.", "Some light."),
    ("ranked.jsonl:3#1", "Southend pier.", "A pier."),
    ("ranked.jsonl:3#2", "Southend pier.", "Pier."),
    ("ranked.jsonl:3#3", "Brighton pier.", "A pier."),
    ("ranked.jsonl:3#4", "Brighton pier.", "Pier."),
]
RANK_REASONS = {
    "ranked.jsonl:4": "a ranked record needs responses of at least two different ranks; "
    "got 1 response(s) ranked [1]",
    "ranked.jsonl:5": "a ranked record needs responses of at least two different ranks; "
    "got 2 response(s) ranked [1]",
    "ranked.jsonl:6": "'ranking' must list each index of 'responses' (0 to 1) once, best first; "
    "got [1, 2]",
}


def test_ranked_records_expand_into_pairs_and_the_books_say_so(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "ranked.jsonl", ranked_records())
    result = read_dataset(path)
    got = [(s.id, s.chosen[0]["content"], s.rejected[0]["content"]) for s in result.samples]
    assert got == PAIRS
    assert {s.kind for s in result.samples} == {"preference"}
    assert {s.source for s in result.samples} == {
        "ranked.jsonl:1",
        "ranked.jsonl:2",
        "ranked.jsonl:3",
    }
    assert result.samples[4].messages == [{"role": "user", "content": "Name a pier."}]
    assert {q.source: q.reason for q in result.quarantined} == RANK_REASONS
    # read counts records; expanded, the samples beyond one per record: 1 + 1 + 3
    assert result.read == 6 and result.expanded == 5
    assert result.read + result.expanded == len(result.samples) + len(result.quarantined)
    assert result.books()["files"] == {
        "ranked.jsonl": {"read": 6, "samples": 8, "quarantined": 3, "expanded": 5}
    }
    assert read_dataset(path, limit=2).read == 2  # the limit counts records
    assert [type(x).__name__ for x in iter_samples(path)] == ["Sample"] * 8 + ["Quarantined"] * 3
    strict = pytest.raises(DataError, match=r"ranked\.jsonl:4: a ranked record needs responses")
    with strict:
        read_dataset(path, strict=True)


def test_ranked_format_is_detected_named_and_configurable() -> None:
    record = ranked_records()[0]
    assert detect_format(record) == "ranked"
    assert len(to_samples(record, "f:1", "ranked")) == 2
    assert DataConfig(path="x", format="ranked").format == "ranked"
    two = {"prompt": "p", "responses": ["good", "bad"]}
    assert to_sample(two, "f:7").id == "f:7#1"
    with pytest.raises(DataError, match="gives 2 samples; read it with to_samples"):
        to_sample(record, "f:1")
    csv_like = {"prompt": "p", "responses": '["a", "b"]', "ranking": "[1, 0]"}
    (sample,) = to_samples(csv_like, "f:2")
    assert (sample.chosen[0]["content"], sample.rejected[0]["content"]) == ("b", "a")


def test_ranked_file_prepares_into_pairs_with_balanced_books(
    chat_tokenizer, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "ranked.jsonl", ranked_records())
    books = prepare(
        path,
        chat_tokenizer,
        tmp_path / "out",
        "dpo",
        max_length=128,
        val_fraction=0,
        test_fraction=0,
        dedup={"exact": True, "near": False},
    )
    assert (books["read"], books["expanded"], books["quarantined"]) == (6, 5, 3)
    assert books["kept"] == 8 and books["dropped"] == {} and balanced(books)
    assert books["files"]["ranked.jsonl"]["expanded"] == 5
    rows = read_pairs(tmp_path / "out", "train").to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(p[0] for p in PAIRS)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| read (records) | expanded | kept | dropped | quarantined |" in report
    assert "| 6 | 5 | 8 | 0 | 3 |" in report


def test_convert_turns_a_ranked_file_into_preference_records(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "ranked.jsonl", ranked_records())
    out = tmp_path / "pairs.jsonl"
    app = typer.Typer()
    app.command()(convert)
    app.callback()(lambda: None)
    result = CliRunner().invoke(app, ["convert", str(path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [
        (r["preferred_output"][0]["content"], r["non_preferred_output"][0]["content"])
        for r in written
    ] == [p[1:] for p in PAIRS]
    assert written[0]["input"] == {"messages": [{"role": "user", "content": "Name a harbour."}]}
    back = read_dataset(out)
    assert back.kinds() == {"preference": 8} and back.quarantined == []
