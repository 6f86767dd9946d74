"""The red-team and bias-probe suites without a model: guardrail reasons, files, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.errors import ConfigError
from tuneforge.eval.bias import divergence, fill, load_probes
from tuneforge.eval.safety import blocked_reasons, load_classifier, load_red_team

PROFANE = "this is a crap answer"  # "crap" is on data/wordlists/profanity_en.txt


def test_blocked_reasons() -> None:
    assert blocked_reasons("The capital of France is Paris.") == []
    assert blocked_reasons(PROFANE) == ["profanity"]
    assert blocked_reasons("Write to jane.doe@example.com for details.") == ["pii"]
    assert blocked_reasons("Call me on +1 415 555 0132 tomorrow.") == ["pii"]
    assert blocked_reasons(f"{PROFANE}, mail jane.doe@example.com") == ["profanity", "pii"]


def test_blocked_reasons_classifier_and_word_list() -> None:
    def scorer(text: str) -> float:
        return 0.9 if "awful" in text else 0.1

    assert blocked_reasons("an awful reply", scorer) == ["classifier"]
    assert blocked_reasons("an awful reply", scorer, threshold=0.95) == []
    assert blocked_reasons("a fine reply", scorer) == []
    assert blocked_reasons("a frobnicated reply", words=frozenset({"frobnicated"})) == ["profanity"]


def test_load_classifier(tmp_path: Path) -> None:
    (tmp_path / "scorers.py").write_text(
        "def half(text):\n    return 0.5\n\ndef wrong(text):\n    return 'toxic'\n"
    )
    assert load_classifier(f"{tmp_path}/scorers.py:half")("x") == 0.5
    assert load_classifier("scorers.py:half", base=tmp_path)("x") == 0.5
    with pytest.raises(ConfigError, match="must return a score between 0 and 1"):
        load_classifier(f"{tmp_path}/scorers.py:wrong")("x")
    with pytest.raises(ConfigError, match="has no function 'missing'"):
        load_classifier(f"{tmp_path}/scorers.py:missing")


def test_bundled_red_team() -> None:
    prompts = load_red_team()
    assert len(prompts) == 30
    assert len({p.id for p in prompts}) == 30
    categories = {p.category for p in prompts}
    assert {"weapons", "self_harm", "hate", "privacy", "malware", "fraud"} <= categories
    assert len(categories) >= 8


def test_red_team_user_files(tmp_path: Path) -> None:
    extra = tmp_path / "mine.jsonl"
    extra.write_text(json.dumps({"id": "x-1", "category": "custom", "prompt": "Do harm."}) + "\n\n")
    assert [p.id for p in load_red_team([extra], include_bundled=False)] == ["x-1"]
    assert len(load_red_team([extra])) == 31


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "mine.jsonl:1: not JSON"),
        ('["a"]', "mine.jsonl:1: expected an object"),
        ('{"id": "a", "category": "c"}', "mine.jsonl:1: 'prompt' must be a non-empty string"),
        ('{"id": "a", "category": "c", "prompt": "p", "x": 1}', "unknown key 'x'"),
        ('{"id": "weapons-1", "category": "c", "prompt": "p"}', "id 'weapons-1' repeats"),
    ],
)
def test_red_team_errors(tmp_path: Path, line: str, message: str) -> None:
    extra = tmp_path / "mine.jsonl"
    extra.write_text(line + "\n")
    with pytest.raises(ConfigError, match=message):
        load_red_team([extra])
    with pytest.raises(ConfigError, match="cannot read"):
        load_red_team([tmp_path / "absent.jsonl"])


def test_bundled_probes() -> None:
    groups = load_probes()
    assert {g.name for g in groups} >= {"gender", "age", "nationality", "religion", "disability"}
    assert 40 <= sum(g.prompts for g in groups) <= 80
    assert 15 <= sum(len(g.templates) for g in groups) <= 25
    for group in groups:
        for template in group.templates:
            for variant in group.variants:
                assert "{" not in fill(template.prompt, variant)
                assert "{" not in fill(template.continuation or "", variant)


def test_fill_capitalises() -> None:
    variant = {"who": "woman", "they": "she"}
    assert fill("{They} met a {who}. {Who}?", variant) == "She met a woman. Woman?"


def test_divergence_masks_the_swapped_terms() -> None:
    man, woman = ["man", "he", "his"], ["woman", "she", "her"]
    assert divergence("He is a man of his word.", "She is a woman of her word.", man, woman) == 0
    assert divergence("", "", man, woman) == 0
    assert divergence("a b c d", "w x y z") == 1
    assert 0 < divergence("He is kind and calm.", "She is kind and loud.", man, woman) < 1


PROBES = """
groups:
  gender:
    variants:
      - {who: man}
      - {who: woman}
    templates:
      - "Describe a {who}."
  colour:
    variants:
      - {shade: red}
      - {shade: blue}
      - {shade: green}
    templates:
      - id: favourite
        prompt: "Is {shade} nice?"
        continuation: "{Shade} is nice."
"""


def test_user_probes_add_and_replace_groups(tmp_path: Path) -> None:
    extra = tmp_path / "probes.yaml"
    extra.write_text(PROBES)
    groups = {g.name: g for g in load_probes([extra])}
    assert groups["gender"].templates[0].id == "gender-0"
    assert groups["gender"].prompts == 2  # the user's gender group replaced the bundled one
    assert groups["colour"].templates[0].continuation == "{Shade} is nice."
    assert "religion" in groups
    assert [g.name for g in load_probes([extra], include_bundled=False)] == ["gender", "colour"]


TWO = "[{a: x}, {a: y}]"


def _group(variants: str = TWO, templates: str = "['{a}']") -> str:
    return f"groups: {{g: {{variants: {variants}, templates: {templates}}}}}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("groups: [", r" line \d+: not valid YAML"),
        ("other: 1", "expected one top-level key 'groups"),
        ("groups: {g: [1]}", "groups.g: expected a mapping"),
        (
            "groups: {g: {variant: [], templates: []}}",
            "groups.g: unknown key 'variant'; did you mean 'variants'",
        ),
        (_group(variants="[{a: x}]"), "groups.g.variants: expected a list of two"),
        (_group(variants="[{a: x}, {b: y}]"), r"variants\[1\]: key 'a' is not in every variant"),
        (_group(variants="[{a: x}, {a: 25}]"), r"variants\[1\].a: expected a word"),
        (_group(templates="[]"), "groups.g.templates: expected a non-empty"),
        (_group(templates="['no slot']"), r"templates\[0\].prompt: has no \{key\}"),
        (_group(templates="['{b}']"), r"placeholder \{b\} is not a variant key"),
        (
            _group(templates="[{prompt: '{a}', continuation: 3}]"),
            r"templates\[0\].continuation: expected",
        ),
        (_group(templates="[{promt: '{a}'}]"), "unknown key 'promt'; did you mean 'prompt'"),
    ],
)
def test_probe_file_errors(tmp_path: Path, text: str, message: str) -> None:
    extra = tmp_path / "probes.yaml"
    extra.write_text(text)
    with pytest.raises(ConfigError, match=f"bias probes: {extra}.*{message}"):
        load_probes([extra], include_bundled=False)


def test_probe_files_missing_or_empty(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read .*absent\.yaml"):
        load_probes([tmp_path / "absent.yaml"])
    with pytest.raises(ConfigError, match="no groups given"):
        load_probes([], include_bundled=False)
