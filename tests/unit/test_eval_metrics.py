"""Eval metrics: each checked against its reference library and hand-computed values."""

from __future__ import annotations

import json
import math

import pytest
import sacrebleu
from jsonschema import Draft202012Validator
from rouge_score import rouge_scorer
from sklearn.metrics import accuracy_score, f1_score

from tuneforge.eval.metrics import (
    METRICS,
    MetricContext,
    Normalization,
    applicable_metrics,
    compute,
    example_scores,
    extract_label,
    normalize,
    parse_tool_calls,
)
from tuneforge.eval.refusal import refusal_rate

PREDICTIONS = [
    "The cat sat on the mat.",
    "A quick brown fox jumps over the lazy dog",
    "It is raining in Paris today",
    "Hello there, general Kenobi!",
    "completely unrelated words",
]
REFERENCES = [
    "The cat is sitting on the mat.",
    "The quick brown fox jumped over the lazy dog.",
    "Today it rains in Paris",
    "Hello there, General Kenobi!",
    "nothing in common here",
]
SENTIMENT = ("positive", "negative", "neutral", "mixed")


def value(name: str, preds: list[str], refs: list[str], ctx: MetricContext | None = None) -> float:
    return compute([name], preds, refs, ctx or MetricContext())[name]


# --- normalisation and exact match ---------------------------------------------------


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        (Normalization(), "The Cat, sat!"),
        (Normalization(lowercase=True), "the cat, sat!"),
        (Normalization(strip_punctuation=True), "The Cat sat"),
        (Normalization(remove_articles=True), "Cat, sat!"),
        (Normalization(collapse_whitespace=False), "  The  Cat, sat! "),
        (Normalization(True, True, True, True), "cat sat"),
    ],
)
def test_normalize_each_option(how: Normalization, expected: str) -> None:
    assert normalize("  The  Cat, sat! ", how) == expected


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        (Normalization(), 0.25),
        (Normalization(lowercase=True), 0.5),
        (Normalization(lowercase=True, strip_punctuation=True), 0.75),
        (Normalization(lowercase=True, strip_punctuation=True, remove_articles=True), 1.0),
        (Normalization(collapse_whitespace=False), 0.0),
    ],
)
def test_exact_match_with_each_normalisation(how: Normalization, expected: float) -> None:
    preds = [" Paris ", "paris", "Paris!", "the Paris"]
    assert value("exact_match", preds, ["Paris"] * 4, MetricContext(normalization=how)) == expected


def test_default_exact_match_and_rouge_l_keep_their_original_values() -> None:
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    pairs = list(zip(PREDICTIONS, REFERENCES, strict=True))
    rouge_l = sum(scorer.score(r, p)["rougeL"].fmeasure for p, r in pairs) / len(pairs)
    exact = sum(p.strip() == r.strip() for p, r in pairs) / len(pairs)
    assert compute(["exact_match", "rouge_l"], PREDICTIONS, REFERENCES, MetricContext()) == {
        "exact_match": round(exact, 4),
        "rouge_l": round(rouge_l, 4),
    }
    pair = compute(["exact_match", "rouge_l"], ["a b ", "x"], [" a b", "y"], MetricContext())
    assert pair == {"exact_match": 0.5, "rouge_l": 0.5}


# --- ROUGE, BLEU, chrF ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"), [("rouge_1", "rouge1"), ("rouge_2", "rouge2"), ("rouge_l", "rougeL")]
)
def test_rouge_matches_rouge_score(name: str, kind: str) -> None:
    scorer = rouge_scorer.RougeScorer([kind], use_stemmer=False)
    expected = [
        scorer.score(r, p)[kind].fmeasure for p, r in zip(PREDICTIONS, REFERENCES, strict=True)
    ]
    assert example_scores(name, PREDICTIONS, REFERENCES, MetricContext()) == expected
    assert value(name, PREDICTIONS, REFERENCES) == round(sum(expected) / len(expected), 4)


def test_rouge_hand_computed() -> None:
    # 3 of the 6 reference words, all 3 predicted: P=1, R=1/2, F=2/3; bigrams 2 of 5: F=4/7.
    preds, refs = ["the cat sat"], ["the cat sat on the mat"]
    assert value("rouge_1", preds, refs) == round(2 / 3, 4)
    assert value("rouge_2", preds, refs) == round(4 / 7, 4)
    assert value("rouge_l", preds, refs) == round(2 / 3, 4)


def test_bleu_and_chrf_match_sacrebleu() -> None:
    bleu = sacrebleu.corpus_bleu(PREDICTIONS, [REFERENCES]).score
    chrf = sacrebleu.corpus_chrf(PREDICTIONS, [REFERENCES]).score
    assert 5 < bleu < 95 and 5 < chrf < 95  # a non-degenerate fixture
    got = compute(["bleu", "chrf"], PREDICTIONS, REFERENCES, MetricContext())
    assert got == {"bleu": round(bleu, 4), "chrf": round(chrf, 4)}
    assert example_scores("bleu", PREDICTIONS, REFERENCES, MetricContext()) is None


def test_bleu_and_chrf_hand_computed() -> None:
    # n-gram precisions 5/6, 3/5, 2/4, 1/3, equal lengths: BLEU = (1/12) ** (1/4) on 0-100.
    preds, refs = ["the cat sat on the mat"], ["the cat sat on a mat"]
    assert value("bleu", preds, refs) == pytest.approx(100 * (1 / 12) ** 0.25, abs=1e-4)
    assert value("bleu", refs, refs) == 100.0
    assert value("chrf", refs, refs) == 100.0
    assert value("chrf", ["xyz"], ["abc"]) == 0.0


# --- classification ------------------------------------------------------------------


def test_extract_label_from_label_list() -> None:
    ctx = MetricContext(labels=("positive", "very positive", "negative"))
    assert extract_label("I'd say it's Very Positive overall", ctx) == "very positive"
    assert extract_label("POSITIVE.", ctx) == "positive"
    assert extract_label("negatively charged", ctx) is None  # whole words only
    assert extract_label("", ctx) is None


def test_extract_label_from_json_key() -> None:
    ctx = MetricContext(label_key="route.team")
    assert extract_label('{"route": {"team": "billing", "p": 1}}', ctx) == "billing"
    assert extract_label('```json\n{"route": {"team": "sales"}}\n```', ctx) == "sales"
    assert extract_label('{"route": {"owner": "x"}}', ctx) is None
    assert extract_label("team: billing", ctx) is None
    assert extract_label('{"route": {"team": 3}}', ctx) == "3"
    assert extract_label("  the   whole text ", MetricContext()) == "the whole text"


def test_accuracy_and_macro_f1_match_sklearn_with_a_label_set() -> None:
    refs = ["positive", "negative", "neutral", "positive", "negative", "positive"]
    preds = [
        "Positive!",
        "I think this is negative",
        "mixed feelings",  # a known label, absent from the references
        "no idea",  # no label: always wrong
        "negative",
        "positive, clearly",
    ]
    ctx = MetricContext(labels=SENTIMENT)
    y_pred = ["positive", "negative", "mixed", "<none>", "negative", "positive"]
    assert [extract_label(p, ctx) or "<none>" for p in preds] == y_pred
    expected_f1 = f1_score(refs, y_pred, average="macro", labels=sorted(set(refs)))
    assert 0 < expected_f1 < 1
    assert value("macro_f1", preds, refs, ctx) == round(expected_f1, 4)
    assert value("accuracy", preds, refs, ctx) == round(accuracy_score(refs, y_pred), 4)


def test_classification_without_a_label_set_uses_the_reference_labels() -> None:
    refs = ["spam", "Ham", "spam", "ham", "Spam"]  # case variants are one label
    preds = ["This is spam.", "ham", "ham", "unsure", "SPAM"]
    y_true = ["spam", "ham", "spam", "ham", "spam"]
    y_pred = ["spam", "ham", "ham", "<none>", "spam"]
    expected = f1_score(y_true, y_pred, average="macro", labels=["ham", "spam"])
    assert 0 < expected < 1
    assert value("macro_f1", preds, refs) == round(expected, 4)
    assert value("accuracy", preds, refs) == 0.6


def test_classification_from_json_key_skips_references_without_a_label() -> None:
    refs = ['{"team": "billing"}', '{"team": "tech"}', '{"team": "billing"}', "not json"]
    preds = ['{"team": "billing"}', '{"team": "billing"}', "oops", '{"team": "tech"}']
    ctx = MetricContext(label_key="team")
    assert example_scores("accuracy", preds, refs, ctx) == [1.0, 0.0, 0.0, None]
    expected = f1_score(
        ["billing", "tech", "billing"],
        ["billing", "billing", "<none>"],
        average="macro",
        labels=["billing", "tech"],
    )
    assert value("macro_f1", preds, refs, ctx) == round(expected, 4)


# --- JSON ----------------------------------------------------------------------------


def test_json_valid_agrees_with_json_loads() -> None:
    plain = ['{"a": 1}', "[1, 2]", "42", '{"a": 1', "not json", '{"a": }']
    expected = []
    for text in plain:
        try:
            json.loads(text)
            expected.append(1.0)
        except json.JSONDecodeError:
            expected.append(0.0)
    assert expected == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert example_scores("json_valid", plain, plain, MetricContext()) == expected
    fenced = ['  ```json\n{"a": 1}\n```  ', "```\n[1]\n```", "```json\n{bad}\n```"]
    assert example_scores("json_valid", fenced, fenced, MetricContext()) == [1.0, 1.0, 0.0]


def test_json_schema_valid_agrees_with_jsonschema() -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
        "required": ["name"],
    }
    preds = ['{"name": "a", "age": 3}', '{"age": 3}', '{"name": "b", "age": -1}', "[]", "{"]
    validator = Draft202012Validator(schema)
    expected = [float(validator.is_valid(json.loads(p))) for p in preds[:4]] + [0.0]
    assert expected == [1.0, 0.0, 0.0, 0.0, 0.0]
    ctx = MetricContext(json_schema=schema)
    assert example_scores("json_schema_valid", preds, preds, ctx) == expected
    with pytest.raises(ValueError, match="needs a JSON schema"):
        compute(["json_schema_valid"], preds, preds, MetricContext())
    with pytest.raises(ValueError, match="not a valid JSON schema"):
        compute(["json_schema_valid"], preds, preds, MetricContext(json_schema={"type": 5}))


# --- tool calls ----------------------------------------------------------------------

WEATHER = {"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}
TIME = {"name": "get_time", "arguments": {"tz": "CET"}}


def test_parse_tool_calls_in_each_format() -> None:
    tagged = f"<tool_call>\n{json.dumps(WEATHER)}\n</tool_call>"
    as_list = json.dumps([WEATHER, TIME])
    string_args = json.dumps({"name": "get_time", "arguments": json.dumps(TIME["arguments"])})
    openai = json.dumps({"type": "function", "function": {**TIME, "arguments": '{"tz": "CET"}'}})
    llama = 'Sure. {"name": "get_time", "parameters": {"tz": "CET"}} done'
    assert parse_tool_calls(tagged) == [WEATHER]
    assert parse_tool_calls(as_list) == [WEATHER, TIME]
    assert parse_tool_calls(string_args) == [TIME]
    assert parse_tool_calls(openai) == [TIME]
    assert parse_tool_calls(llama) == [TIME]
    assert parse_tool_calls(f"<tool_call>{json.dumps(TIME)}</tool_call>{tagged}") == [TIME, WEATHER]
    assert parse_tool_calls('{"tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}') == [
        {"name": "f", "arguments": {}}
    ]
    assert parse_tool_calls("no calls {here}") == []


def test_tool_call_accuracy_checks_names_then_arguments() -> None:
    wrong_args = {"name": "get_weather", "arguments": {"city": "Lyon", "unit": "C"}}
    preds = [
        f"<tool_call>{json.dumps(WEATHER)}</tool_call>",  # right
        json.dumps(wrong_args),  # right name, wrong arguments
        json.dumps([TIME, WEATHER]),  # right calls, other order
        json.dumps(TIME),  # wrong function
        "no tool needed",  # no reference calls: not applicable
        "I answer directly",  # reference: no call at all
    ]
    ctx = MetricContext(
        reference_calls=[[WEATHER], [WEATHER], [WEATHER, TIME], [WEATHER], None, []]
    )
    names = example_scores("tool_call_name_accuracy", preds, preds, ctx)
    calls = example_scores("tool_call_accuracy", preds, preds, ctx)
    assert names == [1.0, 1.0, 1.0, 0.0, None, 1.0]
    assert calls == [1.0, 0.0, 1.0, 0.0, None, 1.0]
    assert compute(["tool_call_accuracy"], preds, preds, ctx) == {"tool_call_accuracy": 0.6}


# --- lengths, refusals, registry -----------------------------------------------------


def test_length_and_refusal_statistics() -> None:
    preds = ["one two three", "I'm sorry, but I can't help with that.", "NOPE", ""]
    refs = ["one", "a b c d", "x y", "z"]
    ctx = MetricContext(refusal_patterns=(r"\bnope\b",))
    got = compute(["length_words", "length_ratio", "refusal_rate"], preds, refs, ctx)
    assert got == {
        "length_words": (3 + 8 + 1 + 0) / 4,
        "length_ratio": round((3 / 1 + 8 / 4 + 1 / 2 + 0) / 4, 4),
        "refusal_rate": 0.5,
    }
    assert got["refusal_rate"] == refusal_rate(preds, ctx.refusal_patterns)
    assert value("refusal_rate", preds, refs) == 0.25
    assert [METRICS[n].higher_is_better for n in got] == [None, None, False]


def test_applicable_metrics_follow_the_data() -> None:
    text = applicable_metrics(REFERENCES, MetricContext())
    assert not {"json_valid", "accuracy", "tool_call_accuracy"} & set(text)
    assert {"exact_match", "bleu", "chrf", "rouge_l", "refusal_rate"} <= set(text)
    labels = applicable_metrics(["yes", "no", "no", "yes", "Yes"], MetricContext())
    assert {"accuracy", "macro_f1"} <= set(labels)
    assert "accuracy" not in applicable_metrics(["yes", "no", "maybe"], MetricContext())
    structured = applicable_metrics(['{"a": 1}', "[2]", "plain"], MetricContext(json_schema={}))
    assert {"json_valid", "json_schema_valid"} <= set(structured)
    tools = applicable_metrics(["x", "y"], MetricContext(reference_calls=[None, [TIME]]))
    assert {"tool_call_name_accuracy", "tool_call_accuracy"} <= set(tools)
    assert "accuracy" in applicable_metrics(REFERENCES, MetricContext(label_key="k"))


def test_every_metric_runs_and_is_described() -> None:
    ctx = MetricContext(json_schema={"type": "object"}, reference_calls=[[TIME]] * 5)
    got = compute(list(METRICS), PREDICTIONS, REFERENCES, ctx)
    assert list(got) == list(METRICS)
    assert all(isinstance(v, float) and not math.isnan(v) for v in got.values())
    assert all(m.description and m.name == k for k, m in METRICS.items())
    # No reference carries one of these labels: nothing to score.
    no_labels = compute(
        ["accuracy", "macro_f1"], PREDICTIONS, REFERENCES, MetricContext(labels=SENTIMENT)
    )
    assert all(math.isnan(v) for v in no_labels.values())


def test_compute_rejects_unknown_names_and_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match=r"unknown metric 'blue'.*bleu, chrf"):
        compute(["blue"], ["a"], ["a"], MetricContext())
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        compute(["exact_match"], ["a", "b"], ["a"], MetricContext())
    no_calls = compute(["tool_call_accuracy"], ["a"], ["a"], MetricContext())
    assert math.isnan(no_calls["tool_call_accuracy"])


def test_a_mixed_test_split_keeps_its_chats_in_step_and_its_texts_apart() -> None:
    from tuneforge.eval.evaluate import build_examples

    chat = [{"role": "user", "content": "Reset?"}, {"role": "assistant", "content": "Hold it."}]
    records = [
        {"id": "doc#1", "text": "Guide > Reset\n\nHold the button."},
        {"id": "qa#1", "messages": chat},
        {"id": "doc#2", "text": "Guide > Care\n\nWipe it."},
    ]
    examples = build_examples(records)
    assert [r["id"] for r in examples.records] == ["qa#1"] and examples.references == ["Hold it."]
    assert examples.prompts == [chat[:1]] and examples.generative
    assert examples.texts == [records[0]["text"], records[2]["text"]]
    texts_only = build_examples([records[0]])
    assert not texts_only.generative and texts_only.records == [] and len(texts_only.texts) == 1
