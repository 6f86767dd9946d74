"""``tuneforge data synth``: every task of a config's synth section, one after another.

Each task writes ``<out_dir>/<task>.jsonl`` (OpenAI chat records with provenance in
``meta.synth``) and ``<out_dir>/<task>.books.json`` (what was read, asked, kept and
dropped, and the bill). The teacher's answers are cached in
``<out_dir>/.cache.sqlite``, shared by the tasks.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tuneforge.config.schema import Config
from tuneforge.data.dedup import normalize_exact
from tuneforge.data.readers import DatasetStream
from tuneforge.data.synth import prompts
from tuneforge.data.synth.cache import AnswerCache, answer_line, request_key
from tuneforge.data.synth.run import Books, request_body, run_task, source_items
from tuneforge.data.synth.teacher import Teacher
from tuneforge.errors import ConfigError

CACHE_FILE = ".cache.sqlite"


def check_synth(config: Config, only: list[str] | None = None) -> list[Any]:
    """The tasks to run, checked before any request is sent (a task without chunking
    settings gets ``data.chunking``'s).

    Raises:
        ConfigError: no teacher or no tasks, an unknown task name, or a prompt template
            that cannot be filled (names the key).
    """
    synth = config.synth
    if synth.teacher is None or not synth.tasks:
        raise ConfigError("synth: give a teacher and at least one task (see docs/collection.md)")
    names = [task.name for task in synth.tasks]
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise ConfigError(f"synth: no task {unknown[0]!r}; tasks: {', '.join(names)}")
    for index, task in enumerate(synth.tasks):
        try:
            prompts.check_template(task.prompt or prompts.DEFAULT_PROMPTS[task.kind])
        except ValueError as err:
            raise ConfigError(f"synth.tasks[{index}].prompt: {err}") from None
        if not Path(task.source).exists():
            raise ConfigError(f"synth.tasks[{index}].source {task.source!r}: not found")
    for index, path in enumerate(synth.answers):
        if not Path(path).is_file():
            raise ConfigError(f"synth.answers[{index}] {path!r}: file not found")
    chunking = config.data.chunking
    return [
        task.model_copy(update={"chunking": task.chunking or chunking})
        for task in synth.tasks
        if not only or task.name in only
    ]


def synthesize(config: Config, only: list[str] | None = None) -> dict[str, Any]:
    """Run the tasks (all, or those named in ``only``); returns each task's books and bill."""
    tasks = check_synth(config, only)
    out_dir = Path(config.synth.out_dir)
    return asyncio.run(_run(config, tasks, out_dir))


async def _run(config: Config, tasks: list[Any], out_dir: Path) -> dict[str, Any]:
    from tuneforge.console import progress

    cache = AnswerCache(out_dir / CACHE_FILE)
    for path in config.synth.answers:
        cache.load(Path(path))
    teacher = Teacher(config.synth.teacher, cache)
    results: dict[str, Any] = {}
    try:
        with progress() as bar:
            for task in tasks:
                seen = existing_prompts(task.dedup_against)
                before = teacher.bill.to_json(teacher.config)
                books = await run_task(task, teacher, out_dir / f"{task.name}.jsonl", seen, bar)
                record = {**books.to_json(), "bill": _difference(teacher, before)}
                (out_dir / f"{task.name}.books.json").write_text(json.dumps(record, indent=2))
                results[task.name] = record
    finally:
        await teacher.close()
        cache.close()
    return results


def export_answers(config: Config, path: Path, only: list[str] | None = None) -> dict[str, int]:
    """Write the cached answers to every request of the tasks to ``path`` (an answer file).

    ``synth.answers`` loads such a file into another cache: a teacher's answers are
    paid for once and shared, or bundled with an example so it runs offline.

    Returns:
        ``{"written": n, "missing": m}``: requests with and without a cached answer.
    """
    tasks = check_synth(config, only)
    model = config.synth.teacher.model
    cache = AnswerCache(Path(config.synth.out_dir) / CACHE_FILE)
    counts = {"written": 0, "missing": 0}
    try:
        with open(path, "w", encoding="utf-8") as handle:
            for task in tasks:
                for item in source_items(task, Books()):
                    key = request_key(request_body(model, task, item))
                    answer = cache.get(key)
                    if answer is None:
                        counts["missing"] += 1
                        continue
                    about = {"task": task.name, "source_id": item.id}
                    handle.write(answer_line(key, model, answer, **about))
                    counts["written"] += 1
    finally:
        cache.close()
    return counts


def existing_prompts(paths: list[str]) -> set[str]:
    """Normalised prompts (the non-assistant text) of the datasets a task must not repeat."""
    seen: set[str] = set()
    for path in paths:
        for sample in DatasetStream(path):
            users = [m for m in sample.messages if m["role"] == "user"]
            text = str(users[-1].get("content") or "") if users else (sample.text or "")
            seen.add(normalize_exact(text))
    return seen


def _difference(teacher: Teacher, before: dict[str, Any]) -> dict[str, Any]:
    """This task's share of the bill (the bill runs over all tasks)."""
    now = teacher.bill.to_json(teacher.config)
    counts = ("sent", "cached", "retries", "failed", "prompt_tokens", "completion_tokens")
    share = {key: now[key] - before[key] for key in counts}
    share["cost"] = round(now["cost"] - before["cost"], 6)
    return share
