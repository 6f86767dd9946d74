"""Teacher-written data, without a model: parsing answers, quality checks, cache, retries."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tuneforge.config.synth_schema import TeacherConfig
from tuneforge.data.synth import prompts
from tuneforge.data.synth.cache import Answer, AnswerCache, request_key
from tuneforge.data.synth.quality import PairFilter, support
from tuneforge.data.synth.teacher import Bill, Teacher, TeacherError

CHUNK = (
    "The X200 router ships with firmware 4.2. To reset it, hold the rear button for "
    "ten seconds until the light blinks amber. Support is open Monday to Friday."
)


def test_pairs_are_read_from_json_fences_brackets_or_q_a_lines() -> None:
    plain = '[{"question": "How to reset?", "answer": "Hold the button."}]'
    assert prompts.parse_pairs("qa", plain) == [("How to reset?", "Hold the button.")]
    fenced = f"Sure! Here you go:\n```json\n{plain}\n```\nAnything else?"
    assert prompts.parse_pairs("qa", fenced) == [("How to reset?", "Hold the button.")]
    lines = "Q1: Which firmware?\nA1: Version 4.2.\nQ2: When is support open?\nA2: Weekdays."
    assert prompts.parse_pairs("qa", lines) == [
        ("Which firmware?", "Version 4.2."),
        ("When is support open?", "Weekdays."),
    ]
    instruction = '[{"instruction": "Summarise.", "response": "A router."}, {"x": 1}]'
    assert prompts.parse_pairs("instruction", instruction) == [("Summarise.", "A router.")]
    assert prompts.parse_pairs("qa", "I am a small model and I like cats.") == []
    assert prompts.parse_paraphrases('["Reset my router?", " "]') == ["Reset my router?"]
    assert prompts.parse_paraphrases("1. How do I reset it?\n- Reset how?") == [
        "How do I reset it?",
        "Reset how?",
    ]


def test_a_template_with_an_unknown_field_is_refused() -> None:
    assert "Passage:\nabc" in prompts.render(prompts.DEFAULT_PROMPTS["qa"], "abc", 2)
    with pytest.raises(ValueError, match=r"unknown field 'chunk'"):
        prompts.check_template("Write about {chunk}")


def test_quality_checks_drop_short_long_made_up_and_repeated_pairs() -> None:
    checks = PairFilter(min_words=2, max_words=12, min_support=0.6, seen={"known question"})
    assert support("Hold the rear button for ten seconds.", CHUNK) == 1.0
    assert support("Call the hotline on Sunday evenings.", CHUNK) < 0.3
    assert checks.check("How do I reset the X200?", "Hold the rear button.", CHUNK) is None
    assert checks.check("Reset?", "Hold the rear button.", CHUNK) == "too_short"
    assert checks.check("How?", "word " * 20, CHUNK) == "too_short"
    assert checks.check("How do I reset it?", "rear " * 13, CHUNK) == "too_long"
    assert checks.check("Who built it?", "Engineers in Paris, France.", CHUNK) == "unsupported"
    assert checks.check("How do I  RESET the X200?", "Hold the rear button.", CHUNK) == "duplicate"
    assert checks.check("Known question", "Hold the rear button.", CHUNK) == "duplicate"


def test_the_cache_key_is_what_decides_the_answer_and_answers_persist(tmp_path: Path) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "seed": 1}
    assert request_key(body) == request_key({**body, "stream": False})
    assert request_key(body) != request_key({**body, "seed": 2})
    cache = AnswerCache(tmp_path / "c.sqlite")
    cache.put(request_key(body), "m", Answer("hello", 3, 1))
    cache.close()
    reopened = AnswerCache(tmp_path / "c.sqlite")
    assert reopened.get(request_key(body)) == Answer("hello", 3, 1) and len(reopened) == 1
    assert reopened.get("nope") is None


def flaky_app(failures: list[int]):
    """An OpenAI-style endpoint that answers each status in ``failures`` first, then 200."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI()
    app.state.calls = 0

    @app.post("/v1/chat/completions")
    async def complete() -> JSONResponse:
        app.state.calls += 1
        if failures:
            status = failures.pop(0)
            headers = {"retry-after": "0.05"} if status == 429 else {}
            error = {"error": {"message": f"status {status}", "type": "x"}}
            return JSONResponse(error, status_code=status, headers=headers)
        reply = {
            "id": "c",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
        }
        return JSONResponse(reply)

    return app


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, port=0, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(10)


def ask(url: str, tmp_path: Path, **settings) -> tuple[Teacher, Answer | TeacherError]:
    config = TeacherConfig(base_url=url, model="m", backoff_s=0.01, **settings)
    teacher = Teacher(config, AnswerCache(tmp_path / "c.sqlite"))
    body = teacher.body([{"role": "user", "content": "hi"}], seed=0)

    async def go():
        try:
            return await teacher.ask(body)
        except TeacherError as err:
            return err
        finally:
            await teacher.close()

    return teacher, asyncio.run(go())


def test_rate_limits_and_server_errors_are_retried_then_cached(tmp_path: Path) -> None:
    app = flaky_app([429, 500, 503])
    with serving(app) as url:
        teacher, answer = ask(url, tmp_path, max_retries=3)
        assert answer == Answer("ok", 7, 2) and app.state.calls == 4
        assert (teacher.bill.sent, teacher.bill.retries, teacher.bill.failed) == (1, 3, 0)
        teacher, answer = ask(url, tmp_path)  # the same request again: from the cache
        assert app.state.calls == 4 and teacher.bill.cached == 1 and teacher.bill.sent == 0
    config = TeacherConfig(base_url="x", model="m", input_price_per_1m=2, output_price_per_1m=8)
    bill = Bill(prompt_tokens=1_000_000, completion_tokens=500_000)
    assert bill.cost(config) == pytest.approx(6.0)  # 1M x $2 + 0.5M x $8 per million


def test_a_request_error_is_not_retried_and_retries_run_out(tmp_path: Path) -> None:
    app = flaky_app([400])
    with serving(app) as url:
        teacher, answer = ask(url, tmp_path)
        assert isinstance(answer, TeacherError) and answer.reason == "http 400"
        assert app.state.calls == 1 and teacher.bill.failures == {"http 400": 1}
    app = flaky_app([500, 500, 500])
    with serving(app) as url:
        teacher, answer = ask(url, tmp_path / "b", max_retries=2)
        assert isinstance(answer, TeacherError) and "gave up after 3 tries" in str(answer)
        assert app.state.calls == 3 and teacher.bill.retries == 2
