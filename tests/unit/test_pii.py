"""PII detection: per-detector precision and recall on a labelled set, and the step's modes."""

from __future__ import annotations

import importlib.util
import sys
import types
from collections import Counter
from dataclasses import dataclass

import pytest
from pii_cases import HARD_NEGATIVES, POSITIVES

from tuneforge.data.pii import TYPES, Finding, PiiStep, _resolve, detect, redact
from tuneforge.data.pii_patterns import DETECTORS
from tuneforge.data.sample import Sample
from tuneforge.data.steps import run_steps
from tuneforge.errors import ConfigError, DataError

STRUCTURED = (
    "email", "phone", "credit_card", "iban", "ipv4", "ipv6", "ssn", "aws_access_key",
    "aws_secret_key", "jwt", "private_key", "url_credentials",
)  # fmt: skip


@dataclass
class Scores:
    positives: Counter[str]
    true_positives: Counter[str]
    false_positives: Counter[str]
    negative_hits: list[tuple[str, str, str]]

    def recall(self, detector: str) -> float:
        return self.true_positives[detector] / self.positives[detector]

    def precision(self, detector: str) -> float:
        found = self.true_positives[detector] + self.false_positives[detector]
        return self.true_positives[detector] / found if found else 1.0


def score() -> Scores:
    """Match every finding against the labels: the right detector and the exact span."""
    positives, true_pos, false_pos = Counter(), Counter(), Counter()
    for detector, text, value in POSITIVES:
        positives[detector] += 1
        hits = [(f.detector, text[f.start : f.end]) for f in detect(text)]
        if (detector, value) in hits:
            true_pos[detector] += 1
            hits.remove((detector, value))
        false_pos.update(name for name, _ in hits)
    negative_hits = [
        (category, f.detector, text[f.start : f.end])
        for category, text in HARD_NEGATIVES
        for f in detect(text)
    ]
    false_pos.update(name for _, name, _ in negative_hits)
    return Scores(positives, true_pos, false_pos, negative_hits)


@pytest.fixture(scope="module")
def scores() -> Scores:
    result = score()
    print("\n| detector | positives | recall | precision | false positives |")
    print("|---|---|---|---|---|")
    for name in sorted(result.positives):
        print(
            f"| {name} | {result.positives[name]} | {result.recall(name):.3f} "
            f"| {result.precision(name):.3f} | {result.false_positives[name]} |"
        )
    print(f"hard negatives: {len(HARD_NEGATIVES)} texts, {len(result.negative_hits)} hits")
    return result


def test_labelled_set_is_large_enough() -> None:
    counts = Counter(detector for detector, _, _ in POSITIVES)
    assert all(counts[name] >= 30 for name in STRUCTURED), counts
    assert len(HARD_NEGATIVES) >= 80


def test_every_labelled_value_is_in_its_text() -> None:
    assert all(value in text for _, text, value in POSITIVES)


@pytest.mark.parametrize("detector", STRUCTURED)
def test_structured_recall_is_at_least_98_percent(scores: Scores, detector: str) -> None:
    missed = [
        text
        for name, text, value in POSITIVES
        if name == detector
        and (name, value) not in [(f.detector, text[f.start : f.end]) for f in detect(text)]
    ]
    assert scores.recall(detector) >= 0.98, missed


def test_no_false_positive_on_hard_negatives(scores: Scores) -> None:
    assert scores.negative_hits == []


def test_no_false_positive_anywhere_in_the_labelled_set(scores: Scores) -> None:
    assert sum(scores.false_positives.values()) == 0, scores.false_positives


def test_redacted_text_holds_nothing_more_to_find() -> None:
    leftovers = [(text, redact(text, detect(text))) for _, text, _ in POSITIVES]
    assert [pair for pair in leftovers if detect(pair[1])] == []


def test_overlaps_keep_the_most_specific_finding() -> None:
    jwt = (
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
        "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
    )
    text = f"Authorization: Bearer {jwt} for https://bob:s3cret@mail.example.com"
    assert [f.detector for f in detect(text)] == ["jwt", "url_credentials"]
    assert redact(text, detect(text)) == (
        "Authorization: Bearer <SECRET> for https://<URL_CREDENTIALS>@mail.example.com"
    )
    iban = "IBAN DE89 3704 0044 0532 0130 00, card 4111 1111 1111 1111"
    assert redact(iban, detect(iban)) == "IBAN <IBAN>, card <CREDIT_CARD>"


def test_overlap_resolution_prefers_priority_then_length() -> None:
    findings = [
        Finding("phone", "phone", 0, 12, 4),
        Finding("credit_card", "credit_card", 2, 21, 3),
        Finding("ip_address", "ipv4", 22, 30, 3),
        Finding("iban", "iban", 20, 40, 3),
        Finding("secret", "jwt", 35, 38, 1),
        Finding("email", "email", 45, 50, 3),
    ]
    # The JWT beats the longer IBAN around it; with the IBAN gone the IPv4 address stays.
    assert [(f.detector, f.start) for f in _resolve(findings)] == [
        ("credit_card", 2),
        ("ipv4", 22),
        ("jwt", 35),
        ("email", 45),
    ]


def test_every_detector_reports_a_known_type() -> None:
    assert {d.type for d in DETECTORS} == set(TYPES)


def test_types_limit_what_is_found() -> None:
    text = "alice@example.com, +44 20 7946 0958, 10.0.0.1"
    assert [f.type for f in detect(text, types={"phone", "ip_address"})] == [
        "phone",
        "ip_address",
    ]


def chat(sample_id: str, *contents: object, **extra: object) -> Sample:
    roles = ["system", "user", "assistant"]
    messages = [{"role": roles[i % 3], "content": c} for i, c in enumerate(contents)]
    return Sample(id=sample_id, kind="chat", source=f"f:{sample_id}", messages=messages, **extra)


SAMPLES = [
    chat(
        "a",
        "You are helpful.",
        [{"type": "text", "text": "Mail alice@example.com or call +1 (555) 123-4567"}],
        "I'll email alice@example.com now.",
    ),
    chat("b", "sys", "What is 2+2?", "4"),
    Sample(
        id="c", kind="text", source="f:c", text="ssh root@10.0.0.7 with key AKIAIOSFODNN7EXAMPLE"
    ),
    chat("d", "sys", "card 4111 1111 1111 1111 and me: bob@example.org", "ok", meta={"k": 1}),
]


def test_redact_mode_rewrites_every_role_and_counts_changes() -> None:
    step = PiiStep(mode="redact")
    kept, stats = run_steps(SAMPLES, [step])
    assert [m["content"] for m in kept[0].messages] == [
        "You are helpful.",
        [{"type": "text", "text": "Mail <EMAIL> or call <PHONE>"}],
        "I'll email <EMAIL> now.",
    ]
    assert kept[1] is SAMPLES[1]
    assert kept[2].text == "ssh root@<IP_ADDRESS> with key <SECRET>"
    assert kept[3].messages[1]["content"] == "card <CREDIT_CARD> and me: <EMAIL>"
    assert stats[0].to_json() == {
        "name": "pii",
        "seen": 4,
        "kept": 4,
        "changed": 3,
        "dropped": {},
    }
    assert step.counts_by_type == {
        "email": 3,
        "phone": 1,
        "ip_address": 1,
        "secret": 1,
        "credit_card": 1,
    }
    assert SAMPLES[0].messages[2]["content"] == "I'll email alice@example.com now."


def test_drop_mode_names_the_most_sensitive_type() -> None:
    kept, stats = run_steps(SAMPLES, [PiiStep(mode="drop")])
    assert [s.id for s in kept] == ["b"]
    assert stats[0].dropped == {"pii:email": 1, "pii:secret": 1, "pii:credit_card": 1}
    assert stats[0].balanced() and stats[0].changed == 0


def test_flag_mode_keeps_samples_and_records_counts() -> None:
    kept, stats = run_steps(SAMPLES, [PiiStep(mode="flag")])
    assert [s.meta.get("pii") for s in kept] == [
        {"email": 2, "phone": 1},
        None,
        {"ip_address": 1, "secret": 1},
        {"credit_card": 1, "email": 1},
    ]
    assert kept[3].meta["k"] == 1
    assert kept[0].messages == SAMPLES[0].messages
    assert (stats[0].kept, stats[0].changed) == (4, 0)


def test_preference_prompt_and_both_replies_are_redacted() -> None:
    sample = Sample(
        id="p",
        kind="preference",
        source="f:p",
        messages=[{"role": "user", "content": "My card is 4111 1111 1111 1111"}],
        chosen=[{"role": "assistant", "content": "Never share card numbers."}],
        rejected=[{"role": "assistant", "content": "Saved 4111 1111 1111 1111 for ops@x.io"}],
    )
    kept, stats = run_steps([sample], [PiiStep()])
    assert kept[0].messages[0]["content"] == "My card is <CREDIT_CARD>"
    assert kept[0].chosen == sample.chosen
    assert kept[0].rejected[0]["content"] == "Saved <CREDIT_CARD> for <EMAIL>"
    assert stats[0].changed == 1


def test_tool_call_arguments_are_redacted_and_stay_json() -> None:
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "send", "arguments": '{"to": "alice@example.com"}'},
    }
    sample = Sample(
        id="t",
        kind="chat",
        source="f:t",
        messages=[{"role": "assistant", "content": None, "tool_calls": [call]}],
    )
    kept, _ = run_steps([sample], [PiiStep()])
    assert kept[0].messages[0]["tool_calls"][0]["function"]["arguments"] == '{"to": "<EMAIL>"}'


def test_bad_mode_or_type_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'mask' is not one of redact, drop, flag"):
        PiiStep(mode="mask")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"unknown \['emails'\]"):
        PiiStep(types=["emails"])
    assert set(TYPES) >= {"email", "phone", "secret", "url_credentials"}


@pytest.mark.skipif(
    importlib.util.find_spec("presidio_analyzer") is not None, reason="presidio is installed"
)
def test_presidio_without_the_package_is_a_clear_data_error() -> None:
    with pytest.raises(DataError, match="presidio-analyzer is not installed"):
        PiiStep(presidio=True)


@dataclass
class FakeResult:
    entity_type: str
    start: int
    end: int
    score: float


class FakeAnalyzer:
    def analyze(self, text: str, entities: list[str], language: str) -> list[FakeResult]:
        assert (entities, language) == (["PERSON", "LOCATION"], "en")
        name, town = text.index("John Smith"), text.index("Springfield")
        return [
            FakeResult("PERSON", name, name + 10, 0.85),
            FakeResult("LOCATION", town, town + 11, 0.4),  # below the threshold
            FakeResult("PERSON", 0, 8, 0.9),  # overlaps the e-mail, which wins
        ]


def test_presidio_findings_join_the_structured_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("presidio_analyzer")
    module.AnalyzerEngine = FakeAnalyzer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "presidio_analyzer", module)
    step = PiiStep(presidio=True)
    sample = Sample(
        id="p", kind="text", source="f:p", text="jo@x.io wrote to John Smith in Springfield"
    )
    kept, stats = run_steps([sample], [step])
    assert kept[0].text == "<EMAIL> wrote to <PERSON> in Springfield"
    assert step.counts_by_type == {"email": 1, "person": 1}
    assert stats[0].changed == 1
