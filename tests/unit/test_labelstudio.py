"""Label Studio: tasks and labelling config out, labelled replies back in."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuneforge.cli.main import main
from tuneforge.data.formats import BadRecord, detect_format, to_samples
from tuneforge.data.labelstudio import (
    LABEL_CONFIG,
    export_tasks,
    import_export,
    read_annotations,
)
from tuneforge.data.readers import read_dataset
from tuneforge.errors import DataError

SYSTEM = {"role": "system", "content": "Answer in one word."}


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def bot(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def annotation(
    reply: str | None, when: str = "2024-05-01T10:00:00Z", rating: int | None = None, **extra: Any
) -> dict[str, Any]:
    """An annotation as Label Studio exports it: results of the reply TextArea and the Rating."""
    result: list[dict[str, Any]] = []
    if reply is not None:
        value = {"text": [reply]}
        result.append(
            {"from_name": "reply", "to_name": "prompt", "type": "textarea", "value": value}
        )
    if rating is not None:
        value = {"rating": rating}
        result.append(
            {"from_name": "quality", "to_name": "prompt", "type": "rating", "value": value}
        )
    return {
        "result": result,
        "was_cancelled": False,
        "completed_by": 1,
        "updated_at": when,
        **extra,
    }


def write_lines(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def dataset(tmp_path: Path) -> Path:
    return write_lines(
        tmp_path / "data.jsonl",
        [
            {"messages": [SYSTEM, user("Capital of France?"), bot("Paris.")]},
            {"prompt": "Capital of Spain?"},  # a prompt alone: labelled from scratch
            {"messages": [user("Capital of Italy?")]},
            {"prompt": "Capital of Peru?", "chosen": "Lima.", "rejected": "Cusco."},
            {"nothing": "here"},
        ],
    )


def test_export_writes_a_task_per_prompt_and_the_labelling_config(tmp_path: Path) -> None:
    out = tmp_path / "ls" / "tasks.json"
    books = export_tasks(dataset(tmp_path), out)
    assert (books.tasks, books.with_reply) == (4, 2)
    assert list(books.skipped.values()) == [1] and "unknown format" in next(iter(books.skipped))
    tasks = json.loads(out.read_text())
    first = tasks[0]["data"]
    assert first["messages"] == [SYSTEM, user("Capital of France?")]
    assert (first["prompt"], first["reply"]) == ("Capital of France?", "Paris.")
    assert (first["sample_id"], first["source"]) == ("data.jsonl:1", "data.jsonl:1")
    prefill = tasks[0]["predictions"][0]["result"][0]
    assert (prefill["from_name"], prefill["type"], prefill["value"]) == (
        "reply",
        "textarea",
        {"text": ["Paris."]},
    )
    assert [t["data"]["messages"] for t in tasks[1:3]] == [
        [user("Capital of Spain?")],
        [user("Capital of Italy?")],
    ]
    assert "predictions" not in tasks[1] and tasks[1]["data"]["reply"] == ""
    assert tasks[3]["data"]["reply"] == "Lima."  # a pair offers its chosen reply
    view = ET.fromstring((tmp_path / "ls" / "tasks.xml").read_text())
    tags = {element.tag: element.attrib for element in view}
    assert tags["Paragraphs"]["value"] == "$messages" and tags["Paragraphs"]["name"] == "prompt"
    assert tags["TextArea"]["name"] == "reply" and tags["TextArea"]["toName"] == "prompt"
    assert tags["Rating"]["name"] == "quality"
    assert (tmp_path / "ls" / "tasks.xml").read_text() == LABEL_CONFIG


def test_export_of_a_dataset_without_prompts_is_an_error(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "bad.jsonl", [{"nothing": 1}])
    with pytest.raises(DataError, match="no record gives a prompt to label"):
        export_tasks(path, tmp_path / "t.json")


def label(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What Label Studio exports after people labelled the tasks (ids and all)."""
    labelled = [
        # corrected the given reply, then a second annotator disagreed earlier on
        [
            annotation("Paris, on the Seine.", "2024-05-02T09:00:00Z", 5),
            annotation("Paris.", "2024-05-01T09:00:00Z", 3),
        ],
        # cancelled once (skipped), then written
        [annotation(None, was_cancelled=True), annotation("Madrid.", rating=4)],
        # everybody skipped it
        [annotation(None, was_cancelled=True)],
        # an empty reply and a written one
        [annotation("  "), annotation("Lima.")],
    ]
    return [
        {"id": 100 + n, **task, "annotations": found}
        for n, (task, found) in enumerate(zip(tasks, labelled, strict=True))
    ]


def test_round_trip_export_label_import_read_back(tmp_path: Path) -> None:
    tasks_path = tmp_path / "tasks.json"
    assert main(["data", "labelstudio", "export", str(dataset(tmp_path)), str(tasks_path)]) == 0
    export = tmp_path / "export.json"
    export.write_text(json.dumps(label(json.loads(tasks_path.read_text())), indent=2))
    out = tmp_path / "labelled.jsonl"
    assert main(["data", "labelstudio", "import", str(export), str(out)]) == 0
    back = read_dataset(out)
    assert [s.messages for s in back.samples] == [
        [SYSTEM, user("Capital of France?"), bot("Paris, on the Seine.")],
        [user("Capital of Spain?"), bot("Madrid.")],
        [user("Capital of Peru?"), bot("Lima.")],
    ]
    quarantine = [json.loads(line) for line in (tmp_path / "labelled.quarantine.jsonl").open()]
    assert [(q["source"], q["reason"]) for q in quarantine] == [
        ("export.json:3", "every annotation of the Label Studio task was cancelled")
    ]


def test_import_counts_what_it_did_not_use_and_the_disagreements(tmp_path: Path) -> None:
    export_tasks(dataset(tmp_path), tmp_path / "tasks.json")
    export = tmp_path / "export.json"
    export.write_text(json.dumps(label(json.loads((tmp_path / "tasks.json").read_text()))))
    books = import_export(export)
    assert (books.tasks, len(books.samples), len(books.quarantined)) == (4, 3, 1)
    assert dict(books.annotations_dropped) == {"cancelled": 2, "no reply": 1}
    assert books.disagreements == ["100"]  # the task id Label Studio gave
    assert books.samples[0].meta == {"rating": 5, "annotators_disagree": True}
    assert books.samples[1].meta == {"rating": 4}


def test_the_export_reads_directly_as_the_labelstudio_format(tmp_path: Path) -> None:
    export_tasks(dataset(tmp_path), tmp_path / "tasks.json")
    export = tmp_path / "export.json"
    export.write_text(json.dumps(label(json.loads((tmp_path / "tasks.json").read_text()))))
    assert detect_format(json.loads(export.read_text())[0]) == "labelstudio"
    for fmt in ("auto", "labelstudio"):
        result = read_dataset(export, fmt)
        assert result.kinds() == {"chat": 3} and len(result.quarantined) == 1


def test_the_most_recent_annotation_wins_and_undated_ones_count_as_oldest() -> None:
    task = {
        "annotations": [
            annotation("new", "2024-06-01T00:00:00+00:00"),
            annotation("old", "2024-01-01T00:00:00"),  # no zone: taken as UTC
            {**annotation("undated"), "updated_at": None},
        ]
    }
    found = read_annotations(task)
    assert (found.reply, found.usable, found.disagree) == ("new", 3, True)
    same = {"annotations": [annotation("x", "2024-01-01T00:00:00Z"), annotation("x ")]}
    assert read_annotations(same).disagree is False
    assert read_annotations({"annotations": [annotation("a"), annotation("b")]}).reply == "b"


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ({"data": {"prompt": "q"}, "annotations": []}, "Label Studio task has no annotations"),
        (
            {"data": {"prompt": "q"}, "annotations": [annotation("")]},
            "no annotation of the Label Studio task has a 'reply' text",
        ),
        ({"data": {"prompt": "q"}, "annotations": "x"}, "'annotations' must be a list"),
        ({"data": {"prompt": "q"}, "annotations": [3]}, "annotations[0] is not an object"),
        (
            {"data": {"prompt": "q"}, "annotations": [{"result": {"a": 1}}]},
            "annotations[0].result must be a list of objects",
        ),
        (
            {"data": {"prompt": "q"}, "annotations": [{"result": [{"type": "textarea"}]}]},
            "annotations[0].result textarea value.text must be a list of strings",
        ),
        ({"data": {"other": "q"}, "annotations": [annotation("a")]}, "'data' has no 'messages'"),
        (
            {"data": {"messages": [{"role": "x"}]}, "annotations": [annotation("a")]},
            "data.messages[0]",
        ),
    ],
)
def test_a_bad_task_gives_a_one_line_reason_naming_the_key(task: dict, expected: str) -> None:
    with pytest.raises(BadRecord) as caught:
        to_samples(task, "export.json:1", "labelstudio")
    assert str(caught.value).startswith(expected)


def test_a_hand_made_task_with_a_text_prompt_is_read() -> None:
    task = {"data": {"text": "Say hi."}, "annotations": [annotation("Hi!")]}
    assert to_samples(task, "e:1")[0].messages == [user("Say hi."), bot("Hi!")]


def test_import_refuses_to_overwrite_its_input(tmp_path: Path) -> None:
    export = tmp_path / "export.json"
    export.write_text("[]")
    assert main(["data", "labelstudio", "import", str(export), str(export)]) == 2


KEYS = ["data", "annotations", "result", "was_cancelled", "type", "value", "from_name", "text"]
KEYS += ["messages", "prompt", "role", "content", "rating", "updated_at"]
VALUES = st.none() | st.booleans() | st.integers(-1, 5) | st.sampled_from(["textarea", "rating"])
VALUES |= st.sampled_from(["", "hi", "user", "assistant", "reply", "2024-01-01", "2024-13-01"])
ANY = st.recursive(
    VALUES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), ANY, max_size=4))
def test_any_task_becomes_a_sample_or_a_one_line_reason(record: dict) -> None:
    try:
        samples = to_samples(record, "f:1", "labelstudio")
    except BadRecord as err:
        assert str(err) and "\n" not in str(err)
    else:
        assert [s.kind for s in samples] == ["chat"]


def test_pairs_on_one_prompt_give_one_task(tmp_path: Path) -> None:
    ranked = {"prompt": "Best fruit?", "responses": ["Mango.", "Apple.", "Rock."]}
    books = export_tasks(write_lines(tmp_path / "r.jsonl", [ranked]), tmp_path / "t.json")
    assert books.tasks == 1
    assert dict(books.skipped) == {"the same prompt and reply as an earlier task": 1}
