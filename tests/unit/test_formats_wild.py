"""OpenAssistant trees and message tables, and Dolly records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuneforge.cli.main import main
from tuneforge.config.schema import DataConfig
from tuneforge.data.formats import FORMATS, BadRecord, detect_format, to_sample, to_samples
from tuneforge.data.oasst_table import message_trees
from tuneforge.data.readers import read_dataset
from tuneforge.data.sample import Sample
from tuneforge.errors import DataError


def message(mid: str, role: str, text: str, rank: int | None = None, **extra: Any) -> dict:
    return {"message_id": mid, "role": role, "text": text, "rank": rank, "lang": "en", **extra}


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def bot(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def tree() -> dict[str, Any]:
    """Two levels: three ranked replies to the prompt (best listed second), a deleted reply
    and one that failed review; the best reply gets a follow-up with two ranked answers."""
    follow_up = message(
        "p2",
        "prompter",
        "And Norway?",
        replies=[
            message("a5", "assistant", "Oslo, on a fjord.", 1),
            message("a4", "assistant", "Oslo.", 0),
        ],
    )
    prompt = message(
        "p1",
        "prompter",
        "Capital of Sweden?",
        replies=[
            message("a2", "assistant", "Maybe Oslo?", 1),
            message("a1", "assistant", "Stockholm.", 0, replies=[follow_up]),
            message("a3", "assistant", "Gothenburg.", 2),
            message("ax", "assistant", "rude", None, deleted=True),
            message("ay", "assistant", "spam", 0, review_result=False),
        ],
    )
    return {"message_tree_id": "p1", "tree_state": "ready_for_export", "prompt": prompt}


def pairs(samples: list[Sample]) -> list[tuple[str, str, str]]:
    return [
        (s.messages[-1]["content"], s.chosen[0]["content"], s.rejected[0]["content"])
        for s in samples
        if s.kind == "preference"
    ]


def reason(record: Any, fmt: str = "auto") -> str:
    with pytest.raises(BadRecord) as caught:
        to_samples(record, "f.jsonl:3", fmt)
    return str(caught.value)


# --- OpenAssistant trees ---------------------------------------------------------------------


def test_an_oasst_tree_gives_its_best_path_then_its_ranked_pairs() -> None:
    assert detect_format(tree()) == "oasst"
    chat, *rest = to_samples(tree(), "trees.jsonl:1")
    assert chat.kind == "chat" and chat.id == "trees.jsonl:1"
    assert chat.messages == [
        user("Capital of Sweden?"),
        bot("Stockholm."),
        user("And Norway?"),
        bot("Oslo."),
    ]
    assert chat.meta == {
        "lang": "en",
        "message_tree_id": "p1",
        "split_group": "oasst:p1",
        "skipped_messages": {"deleted": 1, "failed review": 1},
    }
    assert pairs(rest) == [
        ("Capital of Sweden?", "Stockholm.", "Maybe Oslo?"),
        ("Capital of Sweden?", "Stockholm.", "Gothenburg."),
        ("And Norway?", "Oslo.", "Oslo, on a fjord."),
    ]
    assert [s.id for s in rest] == [f"trees.jsonl:1#{k}" for k in (1, 2, 3)]
    assert rest[2].messages == chat.messages[:3]  # the prompt is the whole path to the question
    tree_meta = {"lang": "en", "message_tree_id": "p1", "split_group": "oasst:p1"}
    assert all(s.meta == tree_meta for s in rest)  # one tree, one split


def test_unranked_replies_come_last_and_give_no_pairs() -> None:
    record = tree()
    for reply in record["prompt"]["replies"]:
        reply["rank"] = None
    record["prompt"]["replies"][1]["replies"] = []
    samples = to_samples(record, "t:1", "oasst")
    assert [s.kind for s in samples] == ["chat"]
    assert samples[0].messages == [user("Capital of Sweden?"), bot("Maybe Oslo?")]


def test_a_path_that_ends_on_a_question_is_cut_after_the_last_reply() -> None:
    record = tree()
    record["prompt"]["replies"][1]["replies"][0]["replies"] = []  # the follow-up has no answer
    chat = to_samples(record, "t:1")[0]
    assert chat.messages == [user("Capital of Sweden?"), bot("Stockholm.")]


def test_a_deleted_reply_is_skipped_and_its_subtree_with_it() -> None:
    record = tree()
    record["prompt"]["replies"][1]["deleted"] = True  # the best reply and its follow-up
    chat, *rest = to_samples(record, "t:1")
    assert chat.messages == [user("Capital of Sweden?"), bot("Maybe Oslo?")]
    assert chat.meta["skipped_messages"] == {"deleted": 2, "failed review": 1}
    assert pairs(rest) == [("Capital of Sweden?", "Maybe Oslo?", "Gothenburg.")]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: r["prompt"].update(deleted=True), "oasst tree: the prompt was deleted"),
        (lambda r: r["prompt"].update(review_result=False), "the prompt failed review"),
        (lambda r: r["prompt"].update(replies=[]), "oasst tree has no usable assistant reply"),
        (lambda r: r["prompt"].update(role="assistant"), "prompt.role must be 'prompter'"),
        (lambda r: r["prompt"]["replies"][2].update(role="bot"), "prompt.replies[2].role 'bot'"),
        (lambda r: r["prompt"]["replies"][0].update(text=""), "prompt.replies[0].text must be"),
        (lambda r: r["prompt"]["replies"][0].update(rank="1"), "prompt.replies[0].rank must be"),
        (lambda r: r["prompt"].update(replies={"a": 1}), "prompt.replies must be a list"),
        (lambda r: r.update(prompt="hello"), "prompt must be a message object, got a str"),
    ],
)
def test_a_bad_tree_gives_a_one_line_reason_naming_the_key(change: Any, expected: str) -> None:
    record = tree()
    change(record)
    found = reason(record, "oasst")
    assert expected in found and "\n" not in found


def test_an_all_skipped_tree_says_what_was_skipped() -> None:
    record = tree()
    for reply in record["prompt"]["replies"]:
        reply["deleted"] = True
    assert reason(record) == "oasst tree has no usable assistant reply (skipped replies: 5 deleted)"


def test_a_flat_message_row_is_quarantined_with_the_command_that_groups_it(tmp_path: Path) -> None:
    rows = [
        {**message("p1", "prompter", "Hi"), "parent_id": None, "message_tree_id": "p1"},
        {**message("a1", "assistant", "Hello", 0), "parent_id": "p1", "message_tree_id": "p1"},
    ]
    path = tmp_path / "messages.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = read_dataset(path)
    assert result.samples == []
    assert [q.source for q in result.quarantined] == ["messages.jsonl:1", "messages.jsonl:2"]
    assert "tuneforge data convert-oasst" in result.quarantined[0].reason


def test_tree_files_read_with_books_that_balance_and_a_bad_tree_names_its_line(
    tmp_path: Path,
) -> None:
    bad = tree()
    bad["prompt"]["replies"][0]["role"] = "robot"
    path = tmp_path / "trees.jsonl"
    path.write_text(json.dumps(tree()) + "\n" + json.dumps(bad) + "\n")
    result = read_dataset(path, "oasst")
    assert result.kinds() == {"chat": 1, "preference": 3}
    assert (result.read, result.expanded, len(result.quarantined)) == (2, 3, 1)
    assert result.quarantined[0].source == "trees.jsonl:2"
    assert result.quarantined[0].reason.startswith("prompt.replies[0].role 'robot'")


# --- OpenAssistant message tables ------------------------------------------------------------


def flat_rows() -> list[dict[str, Any]]:
    """The rows of :func:`tree` as oasst ships them flat, plus an orphan and another tree."""
    rows: list[dict[str, Any]] = []

    def walk(node: dict[str, Any], parent: str | None) -> None:
        row = {k: v for k, v in node.items() if k != "replies"}
        rows.append({**row, "parent_id": parent, "message_tree_id": "p1"})
        for child in node.get("replies", []):
            walk(child, node["message_id"])

    walk(tree()["prompt"], None)
    rows.append({**message("o1", "assistant", "lost", 0), "parent_id": "gone"})
    rows[-1]["message_tree_id"] = "p1"
    other = {"message_tree_id": "q1", "lang": "de"}
    rows.append({**message("q1", "prompter", "Hallo?"), "parent_id": None, **other})
    rows.append({**message("q2", "assistant", "Hallo!", 0), "parent_id": "q1", **other})
    rows.append({"text": "not a message"})
    return rows


def test_a_message_table_is_nested_into_the_trees_the_oasst_format_reads(tmp_path: Path) -> None:
    path = tmp_path / "messages.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in flat_rows()))
    table = message_trees(path)
    assert (table.rows, table.deleted, table.failed_review) == (13, 1, 1)
    assert dict(table.dropped) == {
        "orphaned (its parent is not in the table)": 1,
        "row without message_id": 1,
    }
    assert [t["id"] for t in table.trees] == ["p1", "q1"]
    samples = to_samples(table.trees[0], "t:1", "oasst")
    assert samples[0].messages == to_samples(tree(), "t:1")[0].messages
    assert pairs(samples) == pairs(to_samples(tree(), "t:1"))
    assert [t["id"] for t in message_trees(path, ["de"]).trees] == ["q1"]


def test_convert_oasst_writes_trees_chats_or_pairs(tmp_path: Path) -> None:
    path = tmp_path / "messages.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in flat_rows()))
    for to in ("trees", "chat", "pairs"):
        out = tmp_path / f"{to}.jsonl"
        assert main(["data", "convert-oasst", str(path), str(out), "--to", to]) == 0
    trees = read_dataset(tmp_path / "trees.jsonl")  # auto-detected as oasst
    assert trees.kinds() == {"chat": 2, "preference": 3}
    assert [s.id for s in trees.samples if s.kind == "chat"] == ["p1", "q1"]
    chats = read_dataset(tmp_path / "chat.jsonl")
    assert [s.messages for s in chats.samples] == [
        [user("Capital of Sweden?"), bot("Stockholm."), user("And Norway?"), bot("Oslo.")],
        [user("Hallo?"), bot("Hallo!")],
    ]
    assert pairs(read_dataset(tmp_path / "pairs.jsonl").samples)[0] == (
        "Capital of Sweden?",
        "Stockholm.",
        "Maybe Oslo?",
    )


def test_a_table_without_messages_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a"}\n')
    with pytest.raises(DataError, match="no row is an OpenAssistant message"):
        message_trees(path)


# --- Dolly -----------------------------------------------------------------------------------


def test_dolly_with_context_puts_it_after_the_instruction_and_keeps_the_category() -> None:
    record = {
        "instruction": "When was the tower built?",
        "context": "The tower was built in 1889.",
        "response": "In 1889.",
        "category": "closed_qa",
    }
    assert detect_format(record) == "dolly"
    sample = to_sample(record, "dolly.jsonl:1")
    assert sample.messages == [
        user("When was the tower built?\n\nThe tower was built in 1889."),
        bot("In 1889."),
    ]
    assert sample.meta == {"category": "closed_qa"}


def test_dolly_without_context_is_the_instruction_alone_and_takes_the_system_prompt() -> None:
    record = {"instruction": "Name a colour.", "context": "", "response": "Blue.", "category": ""}
    sample = to_sample(record, "d:1", system_prompt="Be brief.")
    assert sample.messages == [
        {"role": "system", "content": "Be brief."},
        user("Name a colour."),
        bot("Blue."),
    ]
    assert sample.meta == {}


def test_a_record_with_output_stays_alpaca() -> None:
    assert detect_format({"instruction": "a", "output": "b", "response": "c"}) == "alpaca"


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"instruction": "a"}, "missing field 'response'"),
        ({"instruction": "a", "response": 5}, "'response' must be a string"),
        ({"instruction": " ", "response": "b"}, "empty instruction"),
        ({"instruction": "a", "response": "b", "context": ["x"]}, "'context' must be a string"),
        ({"instruction": "a", "response": "b", "category": 3}, "'category' must be a string"),
    ],
)
def test_a_bad_dolly_record_names_the_key(record: dict[str, Any], expected: str) -> None:
    assert reason(record, "dolly") == expected or expected in reason(record, "dolly")


def test_dolly_files_read_with_quarantine_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "dolly.jsonl"
    records = [
        {"instruction": "a", "context": "", "response": "b", "category": "open_qa"},
        {"instruction": "a", "context": "", "category": "open_qa"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = read_dataset(path, "dolly")
    assert [s.meta for s in result.samples] == [{"category": "open_qa"}]
    assert [(q.source, q.reason) for q in result.quarantined] == [
        ("dolly.jsonl:2", "missing field 'response'")
    ]


# --- registration ----------------------------------------------------------------------------


def test_the_new_formats_are_registered_and_configurable() -> None:
    for name in ("oasst", "dolly", "labelstudio"):
        assert name in FORMATS
        assert DataConfig(path="x.jsonl", format=name).format == name


KEYS = ["prompt", "replies", "role", "text", "rank", "deleted", "review_result", "message_id"]
KEYS += ["message_tree_id", "instruction", "context", "response", "category", "lang"]
VALUES = st.none() | st.booleans() | st.integers(-1, 3) | st.sampled_from(["prompter", "assistant"])
VALUES |= st.sampled_from(["", "hi", "en"])
ANY = st.recursive(
    VALUES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), ANY, max_size=6), st.sampled_from(FORMATS))
def test_any_record_becomes_samples_or_a_one_line_reason(record: dict, fmt: str) -> None:
    try:
        samples = to_samples(record, "f:1", fmt)
    except BadRecord as err:
        assert str(err) and "\n" not in str(err)
    else:
        assert samples and all(
            s.kind in ("chat", "preference", "unpaired", "text") for s in samples
        )


@pytest.mark.parametrize(
    ("objective", "kept", "dropped"),
    [
        ("sft", ["chat"], {"kind_preference_not_used_for_sft": 3}),
        ("dpo", ["preference"] * 3, {"kind_chat_not_used_for_pairs": 1}),
    ],
)
def test_the_objective_keeps_the_best_path_or_the_pairs(
    objective: str, kept: list[str], dropped: dict[str, int]
) -> None:
    from tuneforge.data.configure import build_steps
    from tuneforge.data.steps import StepStats

    kind_step = build_steps(DataConfig(path="t.jsonl", format="oasst"), objective=objective)[0]
    stats = StepStats(kind_step.name)
    out = list(kind_step(to_samples(tree(), "t:1"), stats))
    assert [s.kind for s in out] == kept and dict(stats.dropped) == dropped


def numbered_trees(n: int) -> list[dict[str, Any]]:
    """``n`` distinct trees shaped like :func:`tree` (near dedup would merge copies)."""
    trees = []
    for k in range(n):
        record = {**tree(), "message_tree_id": f"t{k}"}
        for node in (record["prompt"], *record["prompt"]["replies"]):
            node["text"] = f"{node['text']} Question {k} about city number {k * 7 + 3}."
        trees.append(record)
    return trees


@pytest.mark.parametrize(("objective", "kept"), [("sft", 20), ("dpo", 60)])
def test_the_data_stage_prepares_oasst_trees_for_either_objective(
    objective: str, kept: int, chat_tokenizer: Any, tmp_path: Path
) -> None:
    from tuneforge.data.prepare import prepare_data, read_split

    path = tmp_path / "trees.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in numbered_trees(20)))
    # A follow-up pair's prompt holds the first question; a tree's samples share a split, so
    # decontamination finds no training pair sharing it with a held-out one.
    config = DataConfig(path=str(path), max_length=128, dedup={"near": False})
    books = prepare_data(
        config, chat_tokenizer, seed=0, out_dir=tmp_path / objective, objective=objective
    )
    assert (books["read"], books["expanded"], books["kept"]) == (20, 60, kept)
    assert books["read"] + books["expanded"] == books["kept"] + sum(books["dropped"].values())
    rows = read_split(tmp_path / objective, "train")
    assert rows and all(("#" in row["id"]) == (objective == "dpo") for row in rows)


def test_the_data_stage_prepares_dolly_records(chat_tokenizer: Any, tmp_path: Path) -> None:
    from tuneforge.data.prepare import prepare_data, read_split

    path = tmp_path / "dolly.jsonl"
    records = [
        {
            "instruction": f"Question {k}: what is {k} plus {k}?",
            "context": "" if k % 2 else f"Note {k}: add the numbers.",
            "response": f"{2 * k}, since {k} + {k} = {2 * k}.",
            "category": "closed_qa" if k % 2 else "open_qa",
        }
        for k in range(20)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    config = DataConfig(path=str(path), max_length=128, dedup={"near": False})
    books = prepare_data(config, chat_tokenizer, seed=0, out_dir=tmp_path / "out")
    assert books["kept"] == 20 and books["quarantined"] == 0
    rows = [r for split in ("train", "val", "test") for r in read_split(tmp_path / "out", split)]
    by_id = {row["id"]: row["messages"][0]["content"] for row in rows}
    assert by_id["dolly.jsonl:1"] == "Question 0: what is 0 plus 0?\n\nNote 0: add the numbers."
    assert by_id["dolly.jsonl:2"] == "Question 1: what is 1 plus 1?"
