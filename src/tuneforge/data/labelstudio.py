"""Label Studio: tasks to label replies with, and labelled replies read back as chat samples.

Export: every record of a dataset becomes a task whose ``data`` holds the
prompt as OpenAI ``messages`` (shown as a dialogue), the last user turn as
``prompt``, the existing reply as ``reply`` (also given as a prediction, so the
annotator starts from it), and ``sample_id`` and ``source``. A record without a
reply (a prompt alone: ``prompt``, ``messages`` ending on a user turn,
``instruction`` without ``output``) becomes a task with an empty reply. Beside
the tasks goes the labelling config (:data:`LABEL_CONFIG`): the dialogue, a
``reply`` TextArea and a 1-5 ``quality`` Rating.

Import (``format: labelstudio``): a task of a Label Studio JSON export becomes a
chat sample, its prompt followed by the labelled reply (the ``reply`` TextArea's
text). Cancelled annotations (skipped tasks) and annotations without a reply
are not used; of the rest the most recently updated one is taken, its rating
kept in ``meta["rating"]``, and ``meta["annotators_disagree"]`` is set when the
others say something else. A task with no usable annotation is quarantined.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tuneforge.data.messages import BadRecord, openai_messages
from tuneforge.data.sample import Message, Sample
from tuneforge.errors import DataError

REPLY, QUALITY, DIALOGUE = "reply", "quality", "prompt"  # the control and object tag names
LABEL_CONFIG = f"""<View>
  <Header value="Conversation"/>
  <Paragraphs name="{DIALOGUE}" value="$messages" layout="dialogue"
              nameKey="role" textKey="content"/>
  <Header value="Assistant reply: write it, or correct the one given"/>
  <TextArea name="{REPLY}" toName="{DIALOGUE}" rows="8" editable="true"
            maxSubmissions="1" required="true"/>
  <Header value="Quality of the reply"/>
  <Rating name="{QUALITY}" toName="{DIALOGUE}" maxRating="5"/>
</View>
"""


@dataclass
class Annotations:
    """What a task's annotations say: the reply taken, its rating, and what was not used.

    Attributes:
        reply: The most recent usable annotation's reply, or None when there is none.
        rating: That annotation's quality rating, if given.
        dropped: Annotations not used, by reason (``cancelled``, ``no reply``).
        usable: How many annotations had a reply.
        disagree: Whether usable annotations differ in reply or rating.
    """

    reply: str | None = None
    rating: float | None = None
    dropped: Counter[str] = field(default_factory=Counter)
    usable: int = 0
    disagree: bool = False

    def missing_reason(self) -> str:
        """Why the task gives no sample (stable text, so quarantine reasons count together)."""
        if not self.dropped:
            return "Label Studio task has no annotations"
        if set(self.dropped) == {"cancelled"}:
            return "every annotation of the Label Studio task was cancelled"
        return f"no annotation of the Label Studio task has a '{REPLY}' text"


def read_annotations(task: dict[str, Any]) -> Annotations:
    """Pick the reply of a task: its most recent annotation that is not cancelled and has one.

    Raises:
        BadRecord: ``annotations`` is not a list of objects.
    """
    annotations = task.get("annotations") or []
    if not isinstance(annotations, list):
        raise BadRecord("'annotations' must be a list")
    found = Annotations()
    usable: list[tuple[datetime, int, str, float | None]] = []
    for index, annotation in enumerate(annotations):
        if not isinstance(annotation, dict):
            raise BadRecord(f"annotations[{index}] is not an object")
        if annotation.get("was_cancelled") is True:
            found.dropped["cancelled"] += 1
            continue
        reply, rating = _result(annotation, f"annotations[{index}]")
        if reply is None or not reply.strip():
            found.dropped["no reply"] += 1
            continue
        usable.append((_when(annotation), index, reply, rating))
    if usable:
        _, _, found.reply, found.rating = max(usable)
        found.usable = len(usable)
        ratings = {rate for *_, rate in usable if rate is not None}
        found.disagree = len({text.strip() for _, _, text, _ in usable}) > 1 or len(ratings) > 1
    return found


def _result(annotation: dict[str, Any], where: str) -> tuple[str | None, float | None]:
    """The reply text (the ``reply`` TextArea, else any TextArea) and rating of an annotation."""
    results = annotation.get("result") or []
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise BadRecord(f"{where}.result must be a list of objects")
    texts = [r for r in results if r.get("type") == "textarea"]
    texts = [r for r in texts if r.get("from_name") == REPLY] or texts
    reply = None
    if texts:
        value = texts[0].get("value")
        lines = value.get("text") if isinstance(value, dict) else None
        lines = [lines] if isinstance(lines, str) else lines
        if not isinstance(lines, list) or not all(isinstance(t, str) for t in lines):
            raise BadRecord(f"{where}.result textarea value.text must be a list of strings")
        reply = "\n".join(lines)
    ratings = [r.get("value") for r in results if r.get("type") == "rating"]
    rating = ratings[0].get("rating") if ratings and isinstance(ratings[0], dict) else None
    if isinstance(rating, bool) or not isinstance(rating, int | float):
        rating = None
    return reply, rating


def _when(annotation: dict[str, Any]) -> datetime:
    """When an annotation was last changed; undated ones count as oldest (then list order)."""
    for key in ("updated_at", "created_at"):
        text = annotation.get(key)
        if isinstance(text, str):
            try:
                stamp = datetime.fromisoformat(text)
            except ValueError:
                continue
            return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    return datetime.min.replace(tzinfo=UTC)


def task_sample(record: dict[str, Any], system_prompt: str | None = None) -> Sample:
    """The chat sample of one Label Studio task: its prompt, then the labelled reply.

    Args:
        record: A task of a Label Studio JSON export (``data`` and ``annotations``).
        system_prompt: Unused; the task's messages carry any system turn.

    Raises:
        BadRecord: no usable annotation, or no prompt in ``data``.
    """
    del system_prompt
    found = read_annotations(record)
    if found.reply is None:
        raise BadRecord(found.missing_reason())
    messages = [*task_prompt(record.get("data")), {"role": "assistant", "content": found.reply}]
    meta: dict[str, Any] = {}
    if found.rating is not None:
        meta["rating"] = found.rating
    if found.disagree:
        meta["annotators_disagree"] = True
    return Sample(id="", kind="chat", source="", messages=messages, meta=meta)


def task_prompt(data: Any) -> list[Message]:
    """The prompt a task shows: ``data.messages``, else ``data.prompt`` or ``data.text``."""
    if not isinstance(data, dict):
        raise BadRecord("'data' must be an object holding the prompt")
    if data.get("messages") is not None:
        return openai_messages(data["messages"], "data.messages")
    for key in ("prompt", "text"):
        text = data.get(key)
        if isinstance(text, str) and text.strip():
            return [{"role": "user", "content": text}]
    raise BadRecord("'data' has no 'messages', 'prompt' or 'text' to use as the prompt")


# --- export ----------------------------------------------------------------------------------


@dataclass
class ExportBooks:
    """What an export wrote: tasks (with and without a reply) and records skipped, by reason."""

    tasks: int = 0
    with_reply: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def export_tasks(path: Path, out: Path, fmt: str = "auto") -> ExportBooks:
    """Write Label Studio tasks for every record of a dataset, and the labelling config.

    Args:
        path: Any dataset tuneforge reads (file or directory).
        out: The tasks file (a JSON array); the config goes beside it as ``.xml``.
        fmt: The record format, or ``auto``.

    Raises:
        DataError: the dataset cannot be read, or gives no task.
    """
    from tuneforge.data.formats import check_format
    from tuneforge.data.sources import dataset_files, iter_records

    fmt, books, tasks = check_format(fmt), ExportBooks(), []
    seen: set[str] = set()  # pairs on one prompt repeat its prompt and chosen reply
    for entry in dataset_files(path)[0]:
        for raw in iter_records(entry):
            try:
                found = _record_tasks(raw.value, raw.source, fmt)
            except BadRecord as err:
                books.skipped[str(err)] += 1
                continue
            for task in found:
                key = json.dumps([task["data"]["messages"], task["data"][REPLY]])
                if key in seen:
                    books.skipped["the same prompt and reply as an earlier task"] += 1
                else:
                    seen.add(key)
                    tasks.append(task)
    if not tasks:
        raise DataError(f"{path}: no record gives a prompt to label ({_top(books.skipped)})")
    books.tasks, books.with_reply = len(tasks), sum(bool(t["data"][REPLY]) for t in tasks)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(tasks, ensure_ascii=False, indent=1) + "\n", "utf-8")
    config_path(out).write_text(LABEL_CONFIG, "utf-8")
    return books


def config_path(tasks: Path) -> Path:
    """``tasks.json`` -> ``tasks.xml``: where the labelling config goes."""
    return tasks.with_suffix(".xml")


def _top(reasons: Counter[str]) -> str:
    return "; ".join(f"{n} x {why}" for why, n in reasons.most_common(3)) or "no records"


def _record_tasks(value: Any, source: str, fmt: str) -> list[dict[str, Any]]:
    """The tasks of one record: one per sample, or one without reply for a prompt alone."""
    from tuneforge.data.formats import given_prompt, to_samples

    if isinstance(value, BadRecord):
        raise value
    try:
        samples = to_samples(value, source, fmt)
    except BadRecord:
        prompt = given_prompt(value, None) if isinstance(value, dict) else None
        if prompt is None:
            raise
        return [_task(prompt, "", str(value.get("id") or source), source)]
    return [_task(*_prompt_and_reply(sample), sample.id, source) for sample in samples]


def _prompt_and_reply(sample: Sample) -> tuple[list[Message], str]:
    if sample.kind == "text":
        return [{"role": "user", "content": sample.text or ""}], ""
    if sample.kind == "preference":
        return sample.messages, _content(sample.chosen)
    messages = sample.messages
    if messages and messages[-1]["role"] == "assistant":
        return messages[:-1], _content(messages[-1:])
    return messages, ""


def _content(reply: list[Message]) -> str:
    return "\n".join(m["content"] for m in reply if m["role"] == "assistant" and m["content"])


def _task(prompt: list[Message], reply: str, sample_id: str, source: str) -> dict[str, Any]:
    users = [m["content"] for m in prompt if m["role"] == "user" and m.get("content")]
    task: dict[str, Any] = {
        "data": {
            "messages": prompt,
            "prompt": users[-1] if users else "",
            REPLY: reply,
            "sample_id": sample_id,
            "source": source,
        }
    }
    if reply:
        prefill = {"from_name": REPLY, "to_name": DIALOGUE, "type": "textarea"}
        task["predictions"] = [
            {"model_version": "dataset", "result": [{**prefill, "value": {"text": [reply]}}]}
        ]
    return task


# --- import ----------------------------------------------------------------------------------


@dataclass
class ImportBooks:
    """What an import read: tasks, samples written, tasks and annotations not used, by reason."""

    tasks: int = 0
    samples: list[Sample] = field(default_factory=list)
    quarantined: list[Any] = field(default_factory=list)
    annotations_dropped: Counter[str] = field(default_factory=Counter)
    disagreements: list[str] = field(default_factory=list)


def import_export(path: Path) -> ImportBooks:
    """Read a Label Studio JSON export into chat samples, counting what was not used.

    Raises:
        DataError: the file cannot be read or holds no tasks.
    """
    from tuneforge.data.readers import convert
    from tuneforge.data.sources import dataset_files, iter_records

    books = ImportBooks()
    for entry in dataset_files(path)[0]:
        for raw in iter_records(entry):
            books.tasks += 1
            if isinstance(raw.value, dict):
                # A bad annotations list raises again below, which quarantines the task.
                with contextlib.suppress(BadRecord):
                    books.annotations_dropped += read_annotations(raw.value).dropped
            item = convert(raw, "labelstudio", None, {})
            if not isinstance(item, list):
                books.quarantined.append(item)
                continue
            books.samples += item
            books.disagreements += [s.id for s in item if s.meta.get("annotators_disagree")]
    if books.tasks == 0:
        raise DataError(f"{path}: no tasks in the file; export the project as JSON")
    return books
