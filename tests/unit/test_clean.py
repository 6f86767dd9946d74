"""Cleaning functions and steps: exact outputs and the reasons samples are dropped for."""

from __future__ import annotations

import pytest

from tuneforge.data.clean import (
    QualityFilter,
    QualityRules,
    TextMapStep,
    duplicate_line_ratio,
    normalize_text,
    profanity_count,
    quality_problem,
    repeated_word_ngram_ratio,
    strip_markup,
    symbol_ratio,
)
from tuneforge.data.language import detect_language
from tuneforge.data.sample import Sample
from tuneforge.data.steps import run_steps


def chat(user: str, assistant: str = "ok", i: int = 0) -> Sample:
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return Sample(id=str(i), kind="chat", source=f"f:{i}", messages=messages)


def test_normalize_text() -> None:
    decomposed = "Cafe\u0301"  # e + combining acute
    assert normalize_text(decomposed) == "Café"
    assert normalize_text("a\r\nb\rc") == "a\nb\nc"
    assert normalize_text("zero\u200bwidth\x00 and\x07 bell") == "zerowidth and bell"
    assert normalize_text("line  \t\nnext\n\n\n\n\nend  ") == "line\nnext\n\nend"
    assert normalize_text("non\u00a0breaking") == "non breaking"


def test_strip_markup() -> None:
    assert strip_markup("plain text, 3 < 4") == "plain text, 3 < 4"
    assert strip_markup("Fish &amp; chips") == "Fish & chips"
    html = "<p>Hello <b>world</b></p><script>alert(1)</script><style>p{}</style><p>Bye</p>"
    assert strip_markup(html) == "Hello world\nBye"


def test_ratios() -> None:
    assert duplicate_line_ratio("a\nb\na\na") == pytest.approx(0.5)
    assert duplicate_line_ratio("") == 0.0
    assert symbol_ratio("abc") == 0.0
    assert symbol_ratio("a@#$") == pytest.approx(0.75)
    assert symbol_ratio('{"team": "billing"}') == 0.0  # JSON replies are not junk
    assert repeated_word_ngram_ratio("the cat sat on the mat today") == 0.0
    assert repeated_word_ngram_ratio("go go go go go go go go") == pytest.approx(5 / 6)


def test_profanity_is_whole_word_and_case_insensitive() -> None:
    assert profanity_count("What the SHIT is this crap") == 2
    assert profanity_count("Scunthorpe and cockpit and classic") == 0


@pytest.mark.parametrize(
    ("sample", "rules", "reason"),
    [
        (chat("   ", ""), QualityRules(), "too_short"),
        (chat("x" * 50), QualityRules(max_chars=20), "too_long"),
        (chat("menu\nmenu\nmenu\nmenu\nmenu\nhome"), QualityRules(), "duplicate_lines"),
        (chat("@@@ ### $$$ %%% ^^^"), QualityRules(), "symbols"),
        (chat("buy now " * 30), QualityRules(), "repetition"),
        (
            chat("Der Hund ist nicht in dem Haus und ich bin auch nicht da."),
            QualityRules(languages=("en",)),
            "language:de",
        ),
        (chat("this is shit"), QualityRules(max_profanity=0), "profanity"),
        (
            chat("you are awful"),
            QualityRules(classifier=lambda t: 0.9 if "awful" in t else 0.0),
            "toxicity",
        ),
        (
            chat("The parcel is late, and I need it by Friday for the party."),
            QualityRules(languages=("en",), max_profanity=0),
            None,
        ),
    ],
)
def test_quality_rules(sample: Sample, rules: QualityRules, reason: str | None) -> None:
    assert quality_problem(sample, rules) == reason


def test_steps_keep_books() -> None:
    samples = [
        chat(" Hello\u00a0there ", i=0),
        chat("fine", i=1),
        chat("@@@@ ####", i=2),
        chat("crap", i=3),
    ]
    steps = [TextMapStep("normalize", normalize_text), QualityFilter(QualityRules(max_profanity=0))]
    kept, stats = run_steps(samples, steps)
    assert [s.id for s in kept] == ["0", "1"]
    assert kept[0].messages[0]["content"] == "Hello there"
    assert stats[0].to_json() == {
        "name": "normalize",
        "seen": 4,
        "kept": 4,
        "changed": 1,
        "dropped": {},
    }
    assert stats[1].dropped == {"symbols": 1, "profanity": 1}


def test_text_samples_are_cleaned_too() -> None:
    sample = Sample(id="t", kind="text", source="f:1", text="<p>Hi</p>")
    kept, stats = run_steps([sample], [TextMapStep("strip_markup", strip_markup)])
    assert kept[0].text == "Hi" and stats[0].changed == 1


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("The weather was cold, and the trains were late for most of the week.", "en"),
        ("Le train est en retard et il ne va pas partir avant la fin de la journée.", "fr"),
        ("Die Bahn ist nicht pünktlich und ich bin auch nicht zu Hause.", "de"),
        ("El tren llega tarde y no hay nada que se pueda hacer por los pasajeros.", "es"),
        ("Поезд опаздывает уже второй час.", "ru"),
        ("火车晚点了两个小时。", "zh"),
        ("12345 !!!", "unknown"),
    ],
)
def test_detect_language(text: str, language: str) -> None:
    assert detect_language(text)[0] == language
