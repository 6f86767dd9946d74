"""Record formats, the reasons bad records are quarantined, writers, and round trips."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuneforge.data.formats import FORMATS, BadRecord, detect_format, to_sample
from tuneforge.data.readers import read_dataset
from tuneforge.data.sample import Sample
from tuneforge.data.writers import openai_record, write_openai_jsonl
from tuneforge.errors import DataError

U, A = "user", "assistant"


def msg(role: str, content: Any, **extra: Any) -> dict[str, Any]:
    return {"role": role, "content": content, **extra}


def turn(who: str, value: Any) -> dict[str, Any]:
    return {"from": who, "value": value}


QA = [msg(U, "q"), msg(A, "a")]
NO_JSON = "Expecting property name enclosed in double quotes"


def call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def convert(record: Any, fmt: str = "auto", **kwargs: Any) -> Sample:
    return to_sample(record, "f.jsonl:1", fmt, **kwargs)


def reason(record: Any, fmt: str = "auto") -> str:
    with pytest.raises(BadRecord) as caught:
        convert(record, fmt)
    return str(caught.value)


def strip_origin(sample: Sample) -> Sample:
    return dataclasses.replace(sample, id="", source="")


# --- formats -------------------------------------------------------------------------------


def test_alpaca_with_system_history_and_input() -> None:
    record = {
        "instruction": "Add",
        "input": "2 and 3",
        "output": "5",
        "system": "Be brief.",
        "history": [["hi", "hello"]],
    }
    sample = convert(record)
    assert (sample.kind, sample.id, sample.source) == ("chat", "f.jsonl:1", "f.jsonl:1")
    assert sample.messages == [
        msg("system", "Be brief."),
        msg(U, "hi"),
        msg(A, "hello"),
        msg(U, "Add\n\n2 and 3"),
        msg(A, "5"),
    ]


def test_placeholders_are_kept_verbatim_and_record_ids_are_used() -> None:
    record = {"id": "r7", "instruction": "who?", "output": "I am {{name}} by {{author}}."}
    sample = convert(record, system_prompt="You help.")
    assert sample.id == "r7"
    assert sample.messages[0] == msg("system", "You help.")
    assert sample.messages[-1]["content"] == "I am {{name}} by {{author}}."


def test_sharegpt_tool_use_becomes_openai_tool_calls() -> None:
    tool = {"name": "add", "description": "sum", "parameters": {"type": "object"}}
    record = {
        "system": "sys",
        "tools": json.dumps([tool]),
        "conversations": [
            turn("human", "2+3?"),
            turn("function_call", '{"name": "add", "arguments": {"a": 2, "b": 3}}'),
            turn("observation", "5"),
            turn("gpt", "It is 5."),
            turn("human", "and 1+1, 2+2?"),
            turn(
                "function_call", '[{"name": "add", "arguments": "{\\"a\\": 1}"}, {"name": "add"}]'
            ),
            turn("observation", "2"),
            turn("observation", "4"),
            turn("gpt", "2 and 4."),
        ],
    }
    sample = convert(record)
    assert sample.kind == "chat"
    assert sample.tools == [{"type": "function", "function": tool}]
    assert sample.messages == [
        msg("system", "sys"),
        msg(U, "2+3?"),
        msg(A, None, tool_calls=[call("call_1", "add", '{"a": 2, "b": 3}')]),
        msg("tool", "5", tool_call_id="call_1"),
        msg(A, "It is 5."),
        msg(U, "and 1+1, 2+2?"),
        msg(A, None, tool_calls=[call("call_2", "add", '{"a": 1}'), call("call_3", "add", "{}")]),
        msg("tool", "2", tool_call_id="call_2"),
        msg("tool", "4", tool_call_id="call_3"),
        msg(A, "2 and 4."),
    ]


def test_openai_messages_parts_tool_calls_and_weights() -> None:
    record = {
        "messages": [
            msg(U, [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], name="ann"),
            msg(A, "draft", weight=0),
            msg(A, None, tool_calls=[{"function": {"name": "f", "arguments": {"x": 1}}}]),
            msg("tool", "ok", tool_call_id="call_1"),
            msg(A, "final", weight=1),
        ],
        "tools": [{"type": "function", "function": {"name": "f"}}],
    }
    sample = convert(record)
    assert sample.messages == [
        msg(U, "ab", name="ann"),
        msg(A, "draft", weight=0),
        msg(A, None, tool_calls=[call("call_1", "f", '{"x": 1}')]),
        msg("tool", "ok", tool_call_id="call_1"),
        msg(A, "final", weight=1),
    ]
    assert sample.tools == record["tools"]


@pytest.mark.parametrize(
    "record",
    [
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
        {
            "conversations": [turn("human", "2+2?")],
            "chosen": turn("gpt", "4"),
            "rejected": turn("gpt", "5"),
        },
        {"messages": [msg(U, "2+2?")], "chosen": [msg(A, "4")], "rejected": msg(A, "5")},
        {"instruction": "2+2?", "chosen": "4", "rejected": "5"},
        {"chosen": [msg(U, "2+2?"), msg(A, "4")], "rejected": [msg(U, "2+2?"), msg(A, "5")]},
        {
            "input": {"messages": [msg(U, "2+2?")]},
            "preferred_output": [msg(A, "4")],
            "non_preferred_output": [msg(A, "5")],
        },
    ],
    ids=["text", "sharegpt", "messages", "alpaca", "implicit-prompt", "openai-dpo"],
)
def test_every_preference_form_gives_the_same_sample(record: dict[str, Any]) -> None:
    sample = convert(record)
    assert sample.kind == "preference"
    assert (sample.prompt, sample.chosen, sample.rejected) == (
        [msg(U, "2+2?")],
        [msg(A, "4")],
        [msg(A, "5")],
    )


@pytest.mark.parametrize("label", [True, False, "false", "TRUE"])
def test_unpaired_takes_booleans_and_csv_style_text(label: Any) -> None:
    sample = convert({"messages": QA, "label": label})
    assert (sample.kind, sample.label) == ("unpaired", str(label).lower() == "true")


@pytest.mark.parametrize(
    ("record", "fmt"),
    [
        ({"messages": QA}, "openai"),
        ({"conversations": [turn("human", "q")]}, "sharegpt"),
        ({"instruction": "q", "output": "a"}, "alpaca"),
        ({"prompt": "q", "completion": "a"}, "alpaca"),
        ({"prompt": "q", "chosen": "a", "rejected": "b"}, "preference"),
        ({"input": {}, "preferred_output": []}, "preference"),
        ({"messages": [], "label": True}, "unpaired"),
        ({"conversations": [], "label": False}, "unpaired"),
        ({"text": "t"}, "text"),
    ],
)
def test_format_detection(record: dict[str, Any], fmt: str) -> None:
    assert detect_format(record) == fmt


def test_explicit_format_and_field_mapping() -> None:
    record = {"question": "Q", "answer": "A", "text": "not this"}
    sample = convert(record, "alpaca", mapping={"instruction": "question", "output": "answer"})
    assert sample.messages == [msg(U, "Q"), msg(A, "A")]
    assert convert(record, mapping={"instruction": "question", "output": "answer"}).kind == "chat"
    assert convert(record).kind == "text"
    swapped = convert(
        {"instruction": "A", "output": "Q"},
        mapping={"instruction": "output", "output": "instruction"},
    )
    assert swapped.messages == [msg(U, "Q"), msg(A, "A")]


def test_bad_mapping_key_and_format_are_errors_with_a_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "t"}\n')
    with pytest.raises(DataError, match=r"field mapping 'instrucion'.*did you mean 'instruction'"):
        read_dataset(path, mapping={"instrucion": "q"})
    with pytest.raises(DataError, match="format 'gpt' is not one of"):
        read_dataset(path, "gpt")


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"messages": []}, "'messages' must be a non-empty list"),
        ({"conversations": []}, "'conversations' must be a non-empty list"),
        ({"messages": [msg(U, "q")]}, "no assistant turn"),
        ({"instruction": "q", "output": ""}, "no assistant turn"),
        ({"instruction": "q"}, "missing field 'output'"),
        ({"instruction": " ", "output": "a"}, "empty instruction"),
        ({"instruction": "q", "output": 4}, "'output' must be a string"),
        ({"instruction": "q", "output": "a", "history": [["x"]]}, "history[0] must be a [user, "
         "assistant] pair of strings"),
        ({"conversations": [turn("bot", "x")]}, "conversations[0].from 'bot' is not one of "
         "human, user, gpt, assistant, system, function_call, observation"),
        ({"conversations": [turn("human", 3)]}, "conversations[0].value must be a string"),
        ({"conversations": [turn("observation", "5")]}, "conversations[0]: observation without "
         "a function_call before it"),
        ({"conversations": [turn("function_call", "{x")]}, "conversations[0]: function_call "
         f"value is not valid JSON ({NO_JSON})"),
        ({"messages": [msg(U, "q"), msg(A, "a", weight=2)]}, "messages[1].weight must be 0 or 1, "
         "got 2"),
        ({"messages": [msg(U, [{"type": "image_url"}])]}, "messages[0].content[0] is not a text "
         "part; only text is supported"),
        ({"messages": [msg(U, "q", tool_calls=[{}])]}, "messages[0].tool_calls on a user "
         "message; only assistant messages call tools"),
        ({"messages": QA, "tools": "[{"}, f"'tools' is text but not valid JSON ({NO_JSON})"),
        ({"messages": QA, "tools": [{"x": 1}]}, "tools[0] must be a function definition with a "
         "'name'"),
        ({"prompt": "q", "chosen": "", "rejected": "b"}, "'chosen' has no assistant turn"),
        ({"chosen": [msg(A, "a")], "rejected": [msg(A, "b")]}, "no prompt: give 'prompt', "
         "'messages' or 'conversations'"),
        ({"messages": QA, "label": "yes"}, "'label' must be true or false, got 'yes'"),
        ({"text": 5}, "'text' must be a string"),
        ({"text": "  "}, "empty text"),
        ("just text", "expected a JSON object, got str"),
    ],
)  # fmt: skip
def test_bad_records_name_the_problem(record: Any, expected: str) -> None:
    assert reason(record) == expected


@pytest.mark.parametrize(
    ("record", "fmt", "expected"),
    [
        ({"output": "a"}, "alpaca", "missing field 'instruction'"),
        ({"prompt": "q"}, "preference", "missing field 'chosen'"),
        ({"messages": QA}, "text", "missing field 'text'"),
    ],
)
def test_a_named_format_reports_its_missing_fields(record: Any, fmt: str, expected: str) -> None:
    assert reason(record, fmt) == expected


# --- writers and round trips ---------------------------------------------------------------


def test_openai_records_of_each_kind() -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    calling = msg(A, None, tool_calls=[call("c1", "f", "{}")])
    chat = Sample("1", "chat", "s", messages=[msg(U, "q"), calling], tools=tools)
    pair = {"messages": [msg(U, "q")], "chosen": [msg(A, "a")], "rejected": [msg(A, "b")]}
    unpaired = Sample("3", "unpaired", "s", messages=QA, label=False)
    assert openai_record(chat) == {
        "messages": [msg(U, "q"), {"role": A, "tool_calls": calling["tool_calls"]}],
        "tools": tools,
    }
    assert openai_record(Sample("2", "preference", "s", tools=tools, **pair)) == {
        "input": {"messages": [msg(U, "q")], "tools": tools},
        "preferred_output": [msg(A, "a")],
        "non_preferred_output": [msg(A, "b")],
    }
    assert openai_record(unpaired) == {"messages": QA, "label": False}
    assert openai_record(Sample("4", "text", "s", text="t")) == {"text": "t"}


def round_trip(samples: list[Sample]) -> list[Sample]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "out.jsonl"
        write_openai_jsonl(samples, path)
        return read_dataset(path).samples


text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
word = text.filter(lambda s: s.strip() != "")
name = st.from_regex(r"[a-z_]{1,8}", fullmatch=True)
arguments = st.dictionaries(name, st.integers() | text, max_size=3)


@st.composite
def alpaca_records(draw: st.DrawFn) -> dict[str, Any]:
    record = {"instruction": draw(word), "input": draw(text), "output": draw(word)}
    if draw(st.booleans()):
        record["system"] = draw(word)
    record["history"] = draw(st.lists(st.lists(text, min_size=2, max_size=2), max_size=3))
    return record


@st.composite
def sharegpt_records(draw: st.DrawFn) -> dict[str, Any]:
    turns = [turn("system", draw(text))] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 4))):
        turns.append(turn(draw(st.sampled_from(["human", "user"])), draw(text)))
        for _ in range(draw(st.integers(0, 2))):
            value = {"name": draw(name), "arguments": draw(arguments)}
            turns += [turn("function_call", json.dumps(value)), turn("observation", draw(text))]
        turns.append(turn(draw(st.sampled_from(["gpt", "assistant"])), draw(word)))
    tools = draw(st.lists(st.fixed_dictionaries({"name": name, "description": text}), max_size=2))
    return {"conversations": turns, "tools": json.dumps(tools)}


@st.composite
def openai_records(draw: st.DrawFn) -> dict[str, Any]:
    messages = [msg("system", draw(text))] if draw(st.booleans()) else []
    for turn in range(draw(st.integers(1, 4))):
        parts = st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": text}), max_size=3)
        messages.append(msg(U, draw(text | parts)))
        if draw(st.booleans()):
            calls = [
                {
                    "id": f"c{turn}",
                    "type": "function",
                    "function": {"name": draw(name), "arguments": draw(arguments)},
                }
            ]
            messages.append({"role": A, "tool_calls": calls})
            messages.append(msg("tool", draw(text), tool_call_id=f"c{turn}"))
        reply = msg(A, draw(word))
        if draw(st.booleans()):
            reply["weight"] = draw(st.sampled_from([0, 1]))
        messages.append(reply)
    return {"messages": messages}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(alpaca_records() | sharegpt_records() | openai_records(), min_size=1, max_size=4))
def test_conversion_then_openai_jsonl_round_trips(records: list[dict[str, Any]]) -> None:
    samples = [to_sample(record, f"g:{i}") for i, record in enumerate(records, 1)]
    back = round_trip(samples)
    assert [s.messages for s in back] == [s.messages for s in samples]
    assert [strip_origin(s) for s in back] == [strip_origin(s) for s in samples]


@settings(max_examples=60, deadline=None)
@given(openai_records())
def test_openai_records_in_normal_form_convert_unchanged(record: dict[str, Any]) -> None:
    normal = []
    for message in record["messages"]:
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(part["text"] for part in content)
        calls = [
            {
                **c,
                "function": {
                    **c["function"],
                    "arguments": json.dumps(c["function"]["arguments"], ensure_ascii=False),
                },
            }
            for c in message.get("tool_calls", [])
        ]
        normal.append({**message, "content": content} | ({"tool_calls": calls} if calls else {}))
    assert to_sample(record, "g:1").messages == normal
    assert to_sample({"messages": normal}, "g:1").messages == normal


KEYS = ["messages", "conversations", "instruction", "input", "output", "system", "history"]
KEYS += ["tools", "prompt", "completion", "chosen", "rejected", "label", "text", "role"]
KEYS += ["content", "from", "value", "tool_calls", "function", "name", "arguments", "weight"]
ODD = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.sampled_from(
        [
            "user",
            "assistant",
            "human",
            "gpt",
            "function_call",
            "observation",
            "",
            "[]",
            '{"name": 1}',
        ]
    )
)
ANY_JSON = st.recursive(
    ODD, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.sampled_from(KEYS), ANY_JSON, max_size=6) | ANY_JSON,
    st.sampled_from(FORMATS),
)
def test_any_json_value_becomes_a_sample_or_a_reason_never_a_crash(record: Any, fmt: str) -> None:
    try:
        sample = to_sample(record, "f:1", fmt)
    except BadRecord as err:
        assert str(err) and "\n" not in str(err)
    else:
        assert sample.kind in ("chat", "preference", "unpaired", "text")
