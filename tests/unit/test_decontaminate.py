"""Decontamination: n-gram overlap with eval samples and benchmark files is caught, exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuneforge.data.decontaminate import (
    DecontaminateStep,
    NgramIndex,
    _gram_hashes,
    _hash_tokens,
    build_index,
    sample_segments,
    tokenize,
)
from tuneforge.data.sample import Sample
from tuneforge.data.steps import run_steps
from tuneforge.errors import ConfigError, DataError

# 25 tokens (13 13-grams); no word repeats, so every n-gram of it is unique.
EVAL_TEXT = (
    "Which planet in our solar system has the longest day measured against its own "
    "year and why do astronomers find this rotation so puzzling today"
)
OTHER = "completely unrelated words about baking sourdough bread at home with a starter"


def text(sample_id: str, body: str) -> Sample:
    return Sample(id=sample_id, kind="text", source=f"t:{sample_id}", text=body)


def chat(sample_id: str, user: str, assistant: str = "Sure.") -> Sample:
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return Sample(id=sample_id, kind="chat", source=f"c:{sample_id}", messages=messages)


def words(first: int, last: int) -> str:
    return " ".join(EVAL_TEXT.split()[first:last])


def test_tokens_ignore_case_punctuation_width_and_whitespace() -> None:
    assert tokenize("Hello,  WORLD!\n\tＦｕｌｌ-width — café's x_y 3.14") == [
        "hello", "world", "full", "width", "café", "s", "x", "y", "3", "14",
    ]  # fmt: skip


def test_exact_overlap_in_any_message_is_dropped() -> None:
    step = DecontaminateStep(build_index([text("q1", EVAL_TEXT)]))
    samples = [
        chat("a", OTHER, f"As asked: {words(3, 16)}."),  # 13 shared tokens, in the reply
        chat("b", OTHER),
        text("c", f"{OTHER} {EVAL_TEXT}"),
    ]
    kept, stats = run_steps(samples, [step])
    assert [s.id for s in kept] == ["b"]
    assert stats[0].to_json() == {
        "name": "decontaminate",
        "seen": 3,
        "kept": 1,
        "changed": 0,
        "dropped": {"contaminated": 2},
    }
    assert step.counts_by_source == {"eval:q1": 2}


def test_overlap_in_a_rejected_reply_is_caught() -> None:
    sample = Sample(
        id="p",
        kind="preference",
        source="p:1",
        messages=[{"role": "user", "content": OTHER}],
        chosen=[{"role": "assistant", "content": "No idea."}],
        rejected=[{"role": "assistant", "content": EVAL_TEXT}],
    )
    index = build_index([text("q1", EVAL_TEXT)])
    assert index.find(["No idea.", OTHER]) is None
    match = index.find(sample_segments(sample))
    assert match is not None and match.sources == ["eval:q1"]


def test_reformatted_overlap_is_caught() -> None:
    index = build_index([text("q1", EVAL_TEXT)])
    reformatted = (
        "WHICH planet, in our Solar-System, has the LONGEST day...\n\n  measured against "
        "its own ＹＥＡＲ"
    )
    assert index.find([reformatted]) is not None
    assert index.find(["Which planet in our solar system has the longest day"]) is None


def test_twelve_shared_tokens_are_not_an_overlap_at_n_13() -> None:
    near_miss = f"{OTHER} {words(5, 17)} {OTHER}"  # exactly 12 consecutive shared tokens
    evals = [text("q1", EVAL_TEXT)]
    assert build_index(evals, n=13).find([near_miss]) is None
    match = build_index(evals, n=12).find([near_miss])
    assert match is not None
    assert (match.ngram, match.matched) == (words(5, 17).lower(), 1)


def test_benchmark_files_of_each_type_are_indexed(tmp_path: Path) -> None:
    jsonl = tmp_path / "bench.jsonl"
    jsonl.write_text(
        json.dumps({"id": 1, "question": OTHER})
        + "\n\n"
        + json.dumps({"id": 2, "choices": ["x", {"text": EVAL_TEXT}], "answer": 3})
        + "\n"
    )
    listing = tmp_path / "bench.json"
    listing.write_text(json.dumps([{"q": "short"}, {"q": "a b c d e f g h i j k l m n"}]))
    lines = tmp_path / "bench.txt"
    lines.write_text("\nthe quick brown fox jumps over the lazy dog near the river bank\n")
    step = DecontaminateStep(build_index(benchmark_files=[jsonl, listing, lines]), mode="flag")
    samples = [
        text("s1", f"Note: {EVAL_TEXT}"),
        text("s2", "A B C D E F G H I J K L M N O P"),
        text("s3", "The quick brown fox jumps over the lazy dog near the river bank, twice."),
        text("s4", "the quick brown fox jumps over the lazy dog"),
    ]
    kept, stats = run_steps(samples, [step])
    assert [s.meta.get("contamination") for s in kept] == [
        {"sources": [f"{jsonl}:3"], "ngram": words(0, 13).lower(), "matched_ngrams": 13},
        {"sources": [f"{listing}#1"], "ngram": "a b c d e f g h i j k l m", "matched_ngrams": 2},
        {
            "sources": [f"{lines}:2"],
            "ngram": "the quick brown fox jumps over the lazy dog near the river bank",
            "matched_ngrams": 1,
        },
        None,
    ]
    assert (stats[0].kept, stats[0].changed, dict(stats[0].dropped)) == (4, 0, {})


def test_short_segments_compare_whole_sequences() -> None:
    question = "What is the boiling point of water at sea level?"  # 10 tokens
    index = build_index([chat("q", question, "100 C")])  # the 2-token answer is ignored
    assert index.short_lengths == {10}
    assert index.labels == ["eval:q"]
    assert index.find([f"Quiz: {question} Answer below."]) is not None
    assert index.find([question.upper()]) is not None
    assert index.find(["What is the boiling point of water"]) is None  # 7 of its tokens
    assert index.find(["100 C"]) is None
    seven = build_index([text("s", "one two three four five six seven")])
    assert len(seven) == 0
    assert seven.find(["one two three four five six seven eight nine"]) is None


def test_flag_records_every_matching_source() -> None:
    evals = [text("q1", EVAL_TEXT), text("q2", f"{OTHER} {words(0, 14)}")]
    step = DecontaminateStep(build_index(evals), mode="flag")
    kept, _ = run_steps([chat("a", EVAL_TEXT)], [step])
    assert kept[0].meta["contamination"] == {
        "sources": ["eval:q1", "eval:q2"],  # q2 shares only its first two 13-grams
        "ngram": words(0, 13).lower(),
        "matched_ngrams": 13,
    }


def test_empty_index_keeps_everything() -> None:
    kept, stats = run_steps([text("a", EVAL_TEXT)], [DecontaminateStep(build_index())])
    assert [s.id for s in kept] == ["a"] and stats[0].balanced()


def test_gram_hashes_are_pinned_and_position_free() -> None:
    tokens = tokenize(EVAL_TEXT)
    hashes = _gram_hashes(_hash_tokens(tokens), 13)
    assert len(hashes) == len(tokens) - 12 == 13
    # Pinned so that indexes built in other processes or runs agree (no salted str hash).
    assert int(hashes[0]) == 0x2A6C711F3BB0298E
    assert int(_gram_hashes(_hash_tokens(tokens[1:14]), 13)[0]) == int(hashes[1])
    assert len(set(hashes.tolist())) == 13


def test_bad_settings_and_files_are_actionable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="min_tokens <= n"):
        NgramIndex(n=5, min_tokens=8)
    with pytest.raises(ConfigError, match="'purge' is not one of drop, flag"):
        DecontaminateStep(build_index(), mode="purge")  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"missing\.jsonl: not found"):
        build_index(benchmark_files=[tmp_path / "missing.jsonl"])
    (tmp_path / "b.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=r"unsupported type '\.csv'"):
        build_index(benchmark_files=[tmp_path / "b.csv"])
    (tmp_path / "b.jsonl").write_text('{"q": "fine"}\n{"q": broken\n')
    with pytest.raises(DataError, match=r"b\.jsonl:2: not JSON"):
        build_index(benchmark_files=[tmp_path / "b.jsonl"])


VOCAB = [f"w{i}" for i in range(500)]


@settings(max_examples=60, deadline=None)
@given(
    eval_words=st.lists(st.sampled_from(VOCAB), min_size=13, max_size=60),
    data=st.data(),
)
def test_any_reformatted_13_token_window_is_caught(
    eval_words: list[str], data: st.DataObject
) -> None:
    start = data.draw(st.integers(0, len(eval_words) - 13))
    window = eval_words[start : start + 13]
    seps = data.draw(st.lists(st.sampled_from([" ", ", ", "\n", " -- ", "! "]), min_size=13))
    noisy = "".join(
        f"{w.upper() if i % 2 else w}{sep}"
        for i, (w, sep) in enumerate(zip(window, seps, strict=False))
    )
    index = build_index([text("e", " ".join(eval_words))])
    assert index.find([f"prefix words {noisy} suffix"]) is not None
    assert index.find([" ".join(window[:12])]) is None


def test_shared_system_prompt_is_not_contamination() -> None:
    from tuneforge.data.decontaminate import DecontaminateStep, build_index
    from tuneforge.data.sample import Sample
    from tuneforge.data.steps import run_steps

    system = "Route the support ticket and reply with JSON only, naming the team and the priority."

    def ticket(i: int, text: str) -> Sample:
        messages = [
            {"role": "system", "content": system},
            {"role": "user", "content": text},
            {"role": "assistant", "content": "ok"},
        ]
        return Sample(id=str(i), kind="chat", source=f"t:{i}", messages=messages)

    held_out = [ticket(0, "My parcel never arrived and the tracking page shows nothing at all.")]
    train = [ticket(1, "I was charged twice for the same order this month, please refund me.")]
    kept, stats = run_steps(train, [DecontaminateStep(build_index(held_out, n=13))])
    assert [s.id for s in kept] == ["1"] and stats[0].dropped == {}
