"""Tests for the offline pre-training corpus and the bundled quickstart dataset."""

from __future__ import annotations

import json
import re
import runpy
from collections import Counter
from pathlib import Path

import pytest

from tuneforge.models.corpus import assistant_dialogues, general_corpus

ROOT = Path(__file__).parents[2]
DATA = ROOT / "examples" / "data" / "support_tickets.jsonl"
SCRIPT = ROOT / "examples" / "make_quickstart_data.py"
TEAMS = {"billing", "technical", "account", "shipping", "sales"}
PRIORITIES = {"low", "normal", "urgent"}


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return general_corpus()


@pytest.fixture(scope="module")
def dialogues() -> list[list[dict[str, str]]]:
    return assistant_dialogues()


@pytest.fixture(scope="module")
def records() -> list[dict]:
    with DATA.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


# --- general_corpus ------------------------------------------------------------------------


def test_general_corpus_is_deterministic() -> None:
    assert general_corpus(seed=3, n_paragraphs=200) == general_corpus(seed=3, n_paragraphs=200)
    assert general_corpus(seed=3, n_paragraphs=200) != general_corpus(seed=4, n_paragraphs=200)


def test_general_corpus_shape(corpus: list[str]) -> None:
    assert len(corpus) == 4000
    assert len(general_corpus(n_paragraphs=7)) == 7
    for paragraph in corpus:
        assert paragraph[0].isupper() or paragraph[0] == '"'
        assert paragraph.rstrip()[-1] in '.?!"'
        assert "  " not in paragraph and "\n" not in paragraph
    size = sum(len(p.encode("utf-8")) for p in corpus)
    assert 800_000 < size < 3_000_000


def test_general_corpus_vocabulary(corpus: list[str]) -> None:
    words = set(re.findall(r"[a-z]+", " ".join(corpus).lower()))
    assert len(words) >= 1500


def test_general_corpus_is_varied(corpus: list[str]) -> None:
    assert len(set(corpus)) > 0.99 * len(corpus)


# --- assistant_dialogues -------------------------------------------------------------------


def test_assistant_dialogues_is_deterministic() -> None:
    assert assistant_dialogues(seed=1, n=200) == assistant_dialogues(seed=1, n=200)
    assert assistant_dialogues(seed=1, n=200) != assistant_dialogues(seed=2, n=200)


def test_assistant_dialogues_roles(dialogues: list[list[dict[str, str]]]) -> None:
    assert len(dialogues) == 1500
    n_system = n_two_turns = 0
    for conv in dialogues:
        roles = [m["role"] for m in conv]
        if roles[0] == "system":
            n_system += 1
            roles = roles[1:]
        assert roles in (["user", "assistant"], ["user", "assistant"] * 2)
        n_two_turns += len(roles) == 4
        for message in conv:
            assert set(message) == {"role", "content"}
            assert message["content"].strip() == message["content"] != ""
    assert 0.2 < n_system / len(dialogues) < 0.4
    assert 0.1 < n_two_turns / len(dialogues) < 0.3


def test_assistant_never_answers_with_json(dialogues: list[list[dict[str, str]]]) -> None:
    replies = [m["content"] for conv in dialogues for m in conv if m["role"] == "assistant"]
    for reply in replies:
        assert "{" not in reply and "}" not in reply, reply
        assert '":' not in reply, reply
        assert reply[0].isupper() or reply[0] == '"', reply


def test_assistant_dialogues_cover_support_requests(
    dialogues: list[list[dict[str, str]]],
) -> None:
    text = " ".join(m["content"] for conv in dialogues for m in conv if m["role"] == "user")
    for phrase in ("charged twice", "log in", "parcel", "crashes", "upgrade"):
        assert phrase in text


# --- quickstart dataset --------------------------------------------------------------------


def test_quickstart_records_parse(records: list[dict]) -> None:
    assert 700 <= len(records) <= 900
    for record in records:
        assert list(record) == ["messages"]
        roles = [m["role"] for m in record["messages"]]
        assert roles == ["system", "user", "assistant"]
        answer = record["messages"][2]["content"]
        parsed = json.loads(answer)
        assert list(parsed) == ["team", "priority"]
        assert parsed["team"] in TEAMS and parsed["priority"] in PRIORITIES
        assert answer == json.dumps(parsed)


def test_quickstart_class_balance(records: list[dict]) -> None:
    answers = [json.loads(r["messages"][2]["content"]) for r in records]
    teams = Counter(a["team"] for a in answers)
    priorities = Counter(a["priority"] for a in answers)
    assert set(teams) == TEAMS and set(priorities) == PRIORITIES
    for count in [*teams.values(), *priorities.values()]:
        assert count >= 0.1 * len(records)


def test_quickstart_user_texts(records: list[dict]) -> None:
    texts = [r["messages"][1]["content"] for r in records]
    assert len(set(texts)) == len(texts)
    for text in texts:
        assert 10 <= len(text.split()) <= 70
    for record, text in zip(records, texts, strict=True):
        priority = json.loads(record["messages"][2]["content"])["priority"]
        has_urgent_cue = re.search(r"urgent|asap|right now|blocked|today", text.lower())
        assert bool(has_urgent_cue) == (priority == "urgent"), text


def test_quickstart_generator_reproduces_file(tmp_path: Path) -> None:
    namespace = runpy.run_path(str(SCRIPT))
    out = tmp_path / "tickets.jsonl"
    assert namespace["main"](out) == len(DATA.read_bytes().splitlines())
    assert out.read_bytes() == DATA.read_bytes()
