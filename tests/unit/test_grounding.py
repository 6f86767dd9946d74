"""The grounding check: which numbers, codes and names an answer made up."""

from __future__ import annotations

import pytest

from tuneforge.eval.grounding import grounding_report, ungrounded, ungrounded_terms

SOURCE = (
    "Order ORD-1234 for Jane Doe costs $1,000.00 and ships in three days to Berlin. "
    "Dr. Alan Price approved the refund of 3.5 EUR."
)


@pytest.mark.parametrize(
    "answer",
    [
        "Your order costs 1000 dollars.",  # grouping commas and trailing zeros
        "The refund is 3.50 EUR.",  # trailing zero of a decimal
        "It arrives in 3 days.",  # the source spells the number
        "Order ord1234 is on its way.",  # codes ignore case and separators
        "Your order 1234 is on its way.",  # the digits of a source's code
        "Thanks, Jane Doe! Dr. Price approved it in Berlin.",  # names from the input
        "Jane's order is fine.",  # a possessive
    ],
)
def test_grounded_answers_are_not_flagged(answer: str) -> None:
    assert ungrounded(answer, [SOURCE]) == []


def test_fabricated_numbers_codes_and_names_are_flagged() -> None:
    answer = "Hi Jane, Mr. Smith from Acme Corp refunded 1,250 EUR for ORD-9999."
    assert ungrounded(answer, [SOURCE]) == ["Smith", "Acme Corp", "1,250", "ORD-9999"]
    kinds = [term.kind for term in ungrounded_terms(answer, [SOURCE])]
    assert kinds == ["entity", "entity", "number", "code"]


def test_number_normalisation() -> None:
    assert ungrounded("It costs 3.50.", ["price 3.5"]) == []
    assert ungrounded("It costs 3.05.", ["price 3.5"]) == ["3.05"]
    assert ungrounded("About 1,000,000 users.", ["1000000 users"]) == []
    assert ungrounded("Use 10.0 ml.", ["use 10 ml"]) == []


def test_sentence_starts_and_list_markers_are_not_facts() -> None:
    answer = "Thanks for asking. The parcel left.\n1. Wait a day.\n2) Then check again."
    assert ungrounded(answer, ["where is my parcel"]) == []
    # the opening word is dropped, the name after it is not
    assert ungrounded("When Paris opens, go.", ["opening hours"]) == ["Paris"]
    assert ungrounded("The Bank of England said so.", ["rates"]) == ["Bank of England"]


def test_acronyms_and_repeats() -> None:
    assert ungrounded("Ask NASA. NASA knows, OK?", ["ask someone"]) == ["NASA"]
    assert ungrounded("Ask NASA.", ["the nasa website"]) == []


def test_several_sources_count() -> None:
    assert ungrounded("See Berlin, 42.", ["in Berlin", "answer: 42"]) == []
    assert ungrounded("See Berlin, 42.", []) == ["Berlin", "42"]


def test_grounding_report() -> None:
    report = grounding_report(
        ["It costs 1000.", "Call Bob Stone at 9 am.", "Fine."],
        ["What does it cost?", "Who do I call?", "ok?"],
        ["It costs $1,000.", None, "Fine."],
    )
    assert report["answers"] == 3
    assert report["flagged"] == 1
    assert report["flagged_rate"] == pytest.approx(0.3333)
    assert report["ungrounded"] == {"number": 1, "code": 0, "entity": 1}
    assert report["examples"] == [
        {"index": 1, "answer": "Call Bob Stone at 9 am.", "ungrounded": ["Bob Stone", "9"]}
    ]
    assert grounding_report([], [], [])["flagged_rate"] == 0.0
    with pytest.raises(ValueError, match="differ in length"):
        grounding_report(["a"], [], [])
