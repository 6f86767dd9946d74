"""LLM-as-judge through the real openai client, against a local stand-in endpoint.

The stand-in is a standard-library HTTP server on 127.0.0.1 that speaks the
OpenAI chat-completions format and grades deterministically: 5 when the
candidate equals the reference, 2 otherwise, and an unusable reply for "???".
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator

import pytest

from judge_stand_in import StandIn, judge_stand_in
from tuneforge.errors import ConfigError, StageFailed
from tuneforge.eval.judge import DEFAULT_RUBRIC, JudgeSpec, judge, parse_score

pytest.importorskip("openai")


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, type[StandIn]]]:
    """The stand-in's base URL and its handler class (which records the requests)."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # a proxy must not see local calls
    with judge_stand_in() as found:
        yield found


PROMPTS = ["Capital of France?", "2 + 2?", "Colour of the sky?"]
REFERENCES = ["Paris", "4", "Blue"]


def test_scores_come_back_parsed_and_normalised(
    endpoint: tuple[str, type[StandIn]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, handler = endpoint
    monkeypatch.setenv("TF_JUDGE_KEY", "sk-test-123")
    spec = JudgeSpec(base_url=url, model="judge-1", rubric="Be exact.", api_key_env="TF_JUDGE_KEY")
    outputs = {"base": ["Paris", "5", "???"], "tuned": ["Paris", "4", "Blue"]}

    result = judge(spec, PROMPTS, REFERENCES, outputs)

    assert result["tuned"] == {
        "score": 1.0,
        "mean_raw": 5.0,
        "parsed": 3,
        "failed": 0,
        "per_example": [5.0, 5.0, 5.0],
        "reasons": ["Score: 5\nMatches the reference."] * 3,
    }
    base = result["base"]
    assert base["per_example"] == [5.0, 2.0, None]
    assert base["mean_raw"] == pytest.approx(3.5)
    assert base["score"] == pytest.approx((3.5 - 1) / 4)
    assert (base["parsed"], base["failed"]) == (2, 1)
    assert base["reasons"][1:] == ["Differs from the reference.", "I cannot grade this."]

    assert len(handler.requests) == 6
    for request in handler.requests:
        assert request["path"] == "/v1/chat/completions"
        assert request["auth"] == "Bearer sk-test-123"
        body = request["body"]
        assert body["model"] == "judge-1"
        assert body["temperature"] == 0
        assert "Be exact." in body["messages"][0]["content"]
        assert "base" not in json.dumps(body["messages"])  # the judge never sees model names
    assert handler.most_in_flight > 1  # requests ran concurrently


def test_without_the_key_variable_a_placeholder_key_is_sent(
    endpoint: tuple[str, type[StandIn]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, handler = endpoint
    monkeypatch.delenv("TF_UNSET_KEY", raising=False)
    spec = JudgeSpec(base_url=url, model="m", rubric=DEFAULT_RUBRIC, api_key_env="TF_UNSET_KEY")
    result = judge(spec, PROMPTS[:1], REFERENCES[:1], {"tuned": ["Paris"]})
    assert result["tuned"]["score"] == 1.0
    assert handler.requests[0]["auth"].startswith("Bearer ")
    assert DEFAULT_RUBRIC.splitlines()[0] in handler.requests[0]["body"]["messages"][0]["content"]


def test_an_unreachable_endpoint_is_a_stage_failure() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    spec = JudgeSpec(base_url=url, model="m", rubric="r", timeout_s=5)
    with pytest.raises(StageFailed, match=rf"^eval\.judge: cannot reach {re.escape(url)}: ") as err:
        judge(spec, PROMPTS, REFERENCES, {"tuned": REFERENCES})
    assert "\n" not in str(err.value)


def test_an_http_error_names_the_status(endpoint: tuple[str, type[StandIn]]) -> None:
    url, _ = endpoint
    spec = JudgeSpec(base_url=url.removesuffix("/v1") + "/wrong", model="m", rubric="r")
    with pytest.raises(StageFailed, match=r"answered HTTP 404"):
        judge(spec, PROMPTS[:1], REFERENCES[:1], {"tuned": ["Paris"]})


def test_misaligned_inputs_are_config_errors() -> None:
    spec = JudgeSpec(base_url="http://127.0.0.1:9/v1", model="m", rubric="r")
    with pytest.raises(ConfigError, match=r"model 'tuned' has 1 outputs for 3 prompts"):
        judge(spec, PROMPTS, REFERENCES, {"tuned": ["Paris"]})
    with pytest.raises(ConfigError, match=r"3 prompts but 2 references"):
        judge(spec, PROMPTS, REFERENCES[:2], {})
    with pytest.raises(ConfigError, match=r"eval\.judge\.scale: 1"):
        judge(JudgeSpec(base_url="x", model="m", rubric="r", scale=1), [], [], {})


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("Score: 4", 4.0),
        ("**Score:** 3/5 because it is partly right", 3.0),
        ('```json\n{"score": "4", "reason": "ok"}\n```', 4.0),
        ('Here you go: {"score": 1, "reason": "wrong {sic}"}', 1.0),
        ('{"reason": "no score here"} score = 2', 2.0),
        ("score: 4.5", 4.5),
        ("Score: 9", None),  # off the 1..5 scale
        ("Score: 0", None),
        ('{"score": true}', None),
        ("I would not score this", None),
        ("", None),
    ],
)
def test_parse_score_reads_json_and_plain_replies(reply: str, score: float | None) -> None:
    assert parse_score(reply, scale=5)[0] == score
