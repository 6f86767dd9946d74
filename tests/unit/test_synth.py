"""Teacher-written data, without a model: parsing answers, quality checks, cache, retries."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import Request  # resolved from here: the endpoints' annotations are strings

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
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "seed": 0}

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


# --- answer files, synthesis before the data stage --------------------------------------------


def qa_app():
    """A teacher that writes one question/answer pair from the passage in each prompt."""
    from fastapi import FastAPI

    app = FastAPI()
    app.state.calls = 0

    @app.post("/v1/chat/completions")
    async def complete(request: Request) -> dict:
        app.state.calls += 1
        number = app.state.calls  # read before the await: requests arrive concurrently
        prompt = (await request.json())["messages"][-1]["content"]
        passage = prompt.split("Passage:\n", 1)[1].split("\n\n", 1)[0]
        pair = [{"question": f"What does it say? ({number})", "answer": passage}]
        message = {"role": "assistant", "content": json.dumps(pair)}
        return {
            "id": "c",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52},
        }

    return app


def synth_config(folder: Path, url: str, answers: str = "") -> Path:
    chunks = [f"Router X{i} resets when its rear button is held for {i} seconds." for i in range(5)]
    (folder / "chunks.jsonl").write_text(
        "".join(json.dumps({"id": f"c{i}", "text": t}) + "\n" for i, t in enumerate(chunks))
    )
    config = folder / "synth.yaml"
    config.write_text(
        "name: synth\nmodel: {name_or_path: tiny}\n"
        "data:\n  sources: [{path: chunks.jsonl}, {path: synth/qa.jsonl}]\n"
        f"synth:\n  teacher: {{base_url: '{url}', model: m, max_retries: 0}}\n"
        f"  answers: [{answers}]\n"
        "  tasks: [{name: qa, kind: qa, source: chunks.jsonl, per_item: 1}]\n"
    )
    return config


def test_an_answer_file_lets_another_machine_synthesize_without_the_teacher(
    tmp_path: Path,
) -> None:
    from tuneforge.config import load_config
    from tuneforge.data.synth.synthesize import export_answers, synthesize

    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    app = qa_app()
    with serving(app) as url:
        config = load_config(synth_config(first, url))
        books = synthesize(config)["qa"]
        assert app.state.calls == 5 and (books["bill"]["sent"], books["kept"]) == (5, 5)
        assert export_answers(config, tmp_path / "answers.jsonl") == {"written": 5, "missing": 0}
    lines = (tmp_path / "answers.jsonl").read_text().splitlines()
    assert [json.loads(line)["source_id"] for line in lines] == [f"c{i}" for i in range(5)]

    # the endpoint is gone: every answer comes from the file, and the output is the same
    answers = str(tmp_path / "answers.jsonl")
    gone = load_config(synth_config(second, "http://127.0.0.1:9/v1", answers))
    books = synthesize(gone)["qa"]
    assert (books["bill"]["sent"], books["bill"]["cached"], books["failed"]) == (0, 5, {})
    written = [folder / "synth" / "qa.jsonl" for folder in (first, second)]
    assert written[0].read_bytes() == written[1].read_bytes()


def test_a_bad_answer_line_names_its_file_and_line(tmp_path: Path) -> None:
    from tuneforge.errors import DataError

    path = tmp_path / "answers.jsonl"
    good = '{"key": "' + "a" * 64 + '", "model": "m", "text": "[]"}'
    for bad, message in [
        ("not json", "not JSON"),
        ('{"key": "short", "model": "m", "text": "x"}', "is not a request key"),
        ('{"key": "' + "b" * 64 + '", "text": "x"}', "key 'model' missing"),
    ]:
        path.write_text(good + "\n\n" + bad + "\n")
        with pytest.raises(DataError, match=rf"answers.jsonl:3: .*{message}"):
            AnswerCache(tmp_path / f"{len(bad)}.sqlite").load(path)
    path.write_text(good + "\n")
    cache = AnswerCache(tmp_path / "ok.sqlite")
    assert cache.load(path) == 1 and cache.load(path) == 0  # a known answer is kept
    assert cache.get("a" * 64) == Answer("[]", 0, 0) and cache.model_of("a" * 64) == "m"


def test_stage_commands_synthesize_first_and_a_missing_output_names_its_task(
    tmp_path: Path,
) -> None:
    from tuneforge.cli.common import preflight
    from tuneforge.cli.data_synth import synthesize_first
    from tuneforge.config import load_config
    from tuneforge.errors import DataError

    app = qa_app()
    with serving(app) as url:
        config = load_config(synth_config(tmp_path, url))
        with pytest.raises(DataError, match=r"synth/qa.jsonl'.*synth task 'qa' writes it"):
            preflight(config)
        off = load_config(synth_config(tmp_path, url), ["synth.auto=false"])
        synthesize_first(off)
        assert app.state.calls == 0 and not (tmp_path / "synth" / "qa.jsonl").exists()
        synthesize_first(config)
        preflight(config)  # the output is there now
        synthesize_first(config)  # cached: nothing sent again
        assert app.state.calls == 5


def test_a_task_cuts_documents_as_data_chunking_says_unless_it_has_its_own(
    tmp_path: Path,
) -> None:
    from tuneforge.config import load_config
    from tuneforge.data.synth.run import Books, source_items
    from tuneforge.data.synth.synthesize import check_synth
    from tuneforge.errors import ConfigError

    (tmp_path / "docs").mkdir()
    sentences = " ".join(f"Step {i} checks the valve number {i} twice." for i in range(60))
    (tmp_path / "docs" / "guide.md").write_text(f"# Guide\n\n{sentences}\n")
    config = tmp_path / "c.yaml"
    config.write_text(
        "name: c\nmodel: {name_or_path: tiny}\n"
        "data: {path: docs, chunking: {max_tokens: 100, overlap_tokens: 0}}\n"
        "synth:\n  teacher: {model: m}\n  tasks:\n"
        "    - {name: a, kind: qa, source: docs}\n"
        "    - {name: b, kind: qa, source: docs, chunking: {max_tokens: 400}}\n"
    )
    first, second = check_synth(load_config(config))
    assert first.chunking.as_tuple() == (100, 0) and second.chunking.as_tuple() == (400, 64)
    many, few = (len(source_items(task, Books())) for task in (first, second))
    assert many > few > 1
    with pytest.raises(ConfigError, match="overlap_tokens 100 must be below max_tokens 100"):
        load_config(config, ["data.chunking.overlap_tokens=100"])
