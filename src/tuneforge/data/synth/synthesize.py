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
from tuneforge.data.synth.cache import AnswerCache
from tuneforge.data.synth.run import run_task
from tuneforge.data.synth.teacher import Teacher
from tuneforge.errors import ConfigError

CACHE_FILE = ".cache.sqlite"


def check_synth(config: Config, only: list[str] | None = None) -> list[Any]:
    """The tasks to run, checked before any request is sent.

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
    return [task for task in synth.tasks if not only or task.name in only]


def synthesize(config: Config, only: list[str] | None = None) -> dict[str, Any]:
    """Run the tasks (all, or those named in ``only``); returns each task's books and bill."""
    tasks = check_synth(config, only)
    out_dir = Path(config.synth.out_dir)
    return asyncio.run(_run(config, tasks, out_dir))


async def _run(config: Config, tasks: list[Any], out_dir: Path) -> dict[str, Any]:
    from tuneforge.console import progress

    cache = AnswerCache(out_dir / CACHE_FILE)
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
