"""Guardrails: PII with the data layer's detectors, blocklist, regexes, length, JSON replies.

Every reason, counter and log line must hold policy names and counts only, never the
text a policy matched.
"""

from __future__ import annotations

import json
import logging

import pytest

from tuneforge.config.serve_schema import GuardrailsConfig
from tuneforge.data.pii import detect, redact
from tuneforge.serve.guardrails import Guardrails

EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"
PHONE = "+1 415 555 0132"
SECRETS = (EMAIL, CARD, PHONE, "Project Zeus", "TCK-4821", "ZEUS")


def guard(**config: object) -> Guardrails:
    return Guardrails(GuardrailsConfig.model_validate(config))


def assert_nothing_leaks(*things: object) -> None:
    shown = json.dumps([repr(thing) for thing in things]).lower()
    for secret in SECRETS:
        assert secret.lower() not in shown


def test_pii_redact_uses_the_data_layers_placeholders() -> None:
    text = f"Mail {EMAIL} or call {PHONE}; card {CARD}."
    verdict = guard(pii="redact").check_input(text)
    assert verdict.action == "redact"
    assert verdict.text == redact(text, detect(text))  # exactly what data preparation writes
    assert verdict.text == "Mail <EMAIL> or call <PHONE>; card <CREDIT_CARD>."
    assert verdict.reasons == ["pii:email", "pii:phone", "pii:credit_card"]
    assert dict(verdict.counts) == {
        ("pii:email", "redact"): 1,
        ("pii:phone", "redact"): 1,
        ("pii:credit_card", "redact"): 1,
    }
    assert_nothing_leaks(verdict.reasons, verdict.counts)


def test_pii_block_refuses_and_keeps_no_text() -> None:
    verdict = guard(pii="block").check_output(f"Her address is {EMAIL} and {EMAIL}.")
    assert (verdict.action, verdict.text, verdict.reasons) == ("block", None, ["pii:email"])
    assert verdict.counts[("pii:email", "block")] == 2


def test_pii_types_limit_what_is_looked_for() -> None:
    verdict = guard(pii="redact", pii_types=["phone"]).check_input(f"{EMAIL} {PHONE}")
    assert verdict.text == f"{EMAIL} <PHONE>"
    assert verdict.reasons == ["pii:phone"]


def test_clean_text_is_allowed_unchanged() -> None:
    rails = guard(pii="block", blocklist=["zeus"], max_input_tokens=10)
    verdict = rails.check_input("What is the capital of France?", token_count=8)
    assert (verdict.action, verdict.text, verdict.reasons) == (
        "allow",
        "What is the capital of France?",
        [],
    )
    assert rails.stats() == {}


def test_blocklist_matches_whole_words_in_any_case() -> None:
    rails = guard(blocklist=["project zeus", "zeus"])
    assert rails.check_input("Tell me about PROJECT ZEUS.").reasons == ["blocklist"]
    assert rails.check_input("Tell me about PROJECT ZEUS.").action == "block"
    assert rails.check_input("Zeusville and zeuses are fine").action == "allow"
    redacting = guard(blocklist=["project zeus", "zeus"], blocklist_action="redact")
    verdict = redacting.check_output("Project Zeus, also called Zeus, ships soon.")
    assert verdict.text == "<REDACTED>, also called <REDACTED>, ships soon."
    assert verdict.counts[("blocklist", "redact")] == 2


def test_regex_policies_block_or_redact_by_name() -> None:
    rails = guard(
        regex=[
            {"name": "ticket", "pattern": r"TCK-\d{4}", "action": "redact"},
            {"name": "codename", "pattern": r"zeus", "action": "block", "ignore_case": True},
        ]
    )
    redacted = rails.check_input("See TCK-4821 and TCK-9000.")
    assert (redacted.action, redacted.text) == ("redact", "See <TICKET> and <TICKET>.")
    assert dict(redacted.counts) == {("regex:ticket", "redact"): 2}
    blocked = rails.check_input("TCK-4821 is about ZEUS")
    assert (blocked.action, blocked.text) == ("block", None)
    assert blocked.reasons == ["regex:ticket", "regex:codename"]
    assert_nothing_leaks(redacted.reasons, blocked.reasons, blocked.counts)


def test_max_input_tokens_blocks_before_any_scan() -> None:
    rails = guard(max_input_tokens=100, pii="redact")
    assert rails.check_input(f"mail {EMAIL}", token_count=100).action == "redact"
    verdict = rails.check_input(f"mail {EMAIL}", token_count=101)
    assert (verdict.action, verdict.reasons) == ("block", ["max_input_tokens"])
    assert rails.check_input("short", token_count=None).action == "allow"  # unknown length


def test_messages_are_checked_in_every_role_part_and_tool_call() -> None:
    messages = [
        {"role": "system", "content": "You answer about Project Zeus."},
        {"role": "user", "content": [{"type": "text", "text": f"I am {EMAIL}"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "1", "function": {"name": "send", "arguments": json.dumps({"to": EMAIL})}}
            ],
        },
    ]
    verdict = guard(pii="redact", blocklist=["project zeus"], blocklist_action="redact")
    checked = verdict.check_input(messages)
    assert checked.action == "redact" and checked.text is None
    assert checked.messages[0]["content"] == "You answer about <REDACTED>."
    assert checked.messages[1]["content"][0]["text"] == "I am <EMAIL>"
    arguments = checked.messages[2]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(arguments) == {"to": "<EMAIL>"}  # still valid JSON
    assert messages[1]["content"][0]["text"] == f"I am {EMAIL}"  # the request is not changed
    assert checked.counts == {("blocklist", "redact"): 1, ("pii:email", "redact"): 2}


def test_apply_to_chooses_the_side() -> None:
    rails = guard(pii="block", apply_to=["output"], max_input_tokens=5)
    assert rails.check_input(f"mail {EMAIL}", token_count=3).action == "allow"
    assert rails.check_input("x", token_count=6).action == "block"  # length is always checked
    assert rails.check_output(f"mail {EMAIL}").action == "block"


@pytest.mark.parametrize(
    ("reply", "action", "text"),
    [
        ('{"answer": 42}', "allow", '{"answer": 42}'),
        ('```json\n{"answer": 42}\n```', "allow", '{"answer": 42}'),  # unwrapped
        ('{"answer": 42', "block", None),
        ("[1, 2]", "block", None),  # JSON mode asks for an object
        ("Sure! Here it is.", "block", None),
    ],
)
def test_json_mode_replies_must_be_json_objects(reply: str, action: str, text: str) -> None:
    verdict = guard().check_output(reply, json_mode=True)
    assert (verdict.action, verdict.text) == (action, text)
    assert verdict.reasons == ([] if action == "allow" else ["json_invalid"])


def test_json_check_can_be_turned_off_and_is_only_for_json_mode() -> None:
    assert guard().check_output("not json", json_mode=False).action == "allow"
    assert guard(check_json=False).check_output("not json", json_mode=True).action == "allow"


def test_redacted_json_stays_valid() -> None:
    verdict = guard(pii="redact").check_output(json.dumps({"email": EMAIL}), json_mode=True)
    assert verdict.action == "redact"
    assert json.loads(verdict.text) == {"email": "<EMAIL>"}


def test_counters_and_logs_hold_names_and_counts_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tuneforge.serve.guardrails")
    rails = guard(
        pii="redact",
        blocklist=["project zeus"],
        regex=[{"name": "ticket", "pattern": r"TCK-\d{4}", "action": "redact"}],
    )
    rails.check_input(f"{EMAIL} TCK-4821", request_id="req-1")
    rails.check_input(f"{EMAIL} {EMAIL}")
    rails.check_output("project zeus")
    rails.check_output("clean")
    assert rails.stats() == {
        ("input", "regex:ticket", "redact"): 1,
        ("input", "pii:email", "redact"): 2,  # checks, not matches
        ("output", "blocklist", "block"): 1,
    }
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "guardrails: input redact request req-1 (regex:ticket/redact=1, pii:email/redact=1)",
        "guardrails: input redact (pii:email/redact=2)",
        "guardrails: output block (blocklist/block=1)",
    ]
    assert_nothing_leaks(lines, rails.stats())
