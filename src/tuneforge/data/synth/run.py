"""Running a synth task: source items in, teacher answers, checked pairs out as chat JSONL.

The output is rebuilt from the cache on every run, in source order, so a re-run
writes the same file and sends only the requests that are not cached yet: a run
killed half-way resumes where it stopped, and a finished one costs nothing again.
Every sample carries its provenance in ``meta.synth``: the task, its kind, the
teacher model, the prompt version, the source item's id and place, and the request
key of the answer it came from. ``meta.split_group`` keeps the pairs written from
one chunk in one split, and a paraphrase in its original's.

The books balance per task: every source item is used, or skipped with a reason;
every request is answered or failed (with the reason); every parsed pair is kept or
dropped (with the reason).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.config.mix_schema import ChunkingConfig
from tuneforge.config.synth_schema import SynthTask
from tuneforge.data.dedup import normalize_exact
from tuneforge.data.readers import DatasetStream
from tuneforge.data.sample import Sample
from tuneforge.data.split import SPLIT_GROUP
from tuneforge.data.synth import prompts
from tuneforge.data.synth.cache import request_key
from tuneforge.data.synth.quality import PairFilter
from tuneforge.data.synth.teacher import Teacher, TeacherError

WINDOW = 8  # requests queued per concurrency slot: bounds memory on large sources


@dataclass
class Item:
    """One source item: a chunk to write pairs about, or a chat prompt to paraphrase."""

    id: str
    source: str
    text: str
    group: str  # the split group its samples join (see tuneforge.data.split)
    messages: list[dict[str, Any]] | None = None


@dataclass
class Books:
    """What one task read, asked and kept."""

    items: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    unparsed: int = 0
    pairs: int = 0
    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "skipped": dict(self.skipped),
            "requests": self.requests,
            "failed": dict(self.failed),
            "unparsed_answers": self.unparsed,
            "pairs": self.pairs,
            "kept": self.kept,
            "dropped": dict(self.dropped),
        }


def source_items(task: SynthTask, books: Books) -> list[Item]:
    """The items a task works on; records a kind cannot use are skipped with the reason."""
    chunking = task.chunking or ChunkingConfig()
    stream = DatasetStream(
        task.source,
        task.format,
        limit=task.max_items,
        key=f"synth task {task.name!r} source",
        chunking=chunking.as_tuple(),
    )
    items = []
    for sample in stream:
        item = _item(task.kind, sample)
        if isinstance(item, str):
            books.skipped[item] += 1
        else:
            items.append(item)
    books.skipped.update({f"unreadable: {r}": n for r, n in stream.reasons.items()})
    books.items = len(items)
    return items


def _item(kind: str, sample: Sample) -> Item | str:
    if kind != "paraphrase":
        text = sample.text if sample.kind == "text" else sample.content_key()
        return Item(sample.id, sample.source, text, f"synth:{sample.id}") if text else "empty"
    if sample.kind != "chat":
        return f"{sample.kind}_sample_has_no_prompt_to_paraphrase"
    users = [i for i, m in enumerate(sample.messages) if m["role"] == "user"]
    if not users:
        return "no_user_turn"
    last = sample.messages[users[-1]]
    content = str(last.get("content") or "")
    # a paraphrase joins its original's split group: the original's own key is its prompt
    return Item(sample.id, sample.source, content, sample.prompt_key(), list(sample.messages))


def item_seed(task: SynthTask, item: Item) -> int:
    """A request seed from the task's seed and the item's id (stable when items move)."""
    digest = hashlib.sha256(f"{task.seed}:{item.id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def request_body(model: str, task: SynthTask, item: Item) -> dict[str, Any]:
    """The chat completion request for one item, to ``model``."""
    template = task.prompt or prompts.DEFAULT_PROMPTS[task.kind]
    messages = [
        {"role": "system", "content": prompts.SYSTEM},
        {"role": "user", "content": prompts.render(template, item.text, task.per_item)},
    ]
    return {
        "model": model,
        "messages": messages,
        "temperature": task.temperature,
        "max_tokens": task.max_tokens,
        "seed": item_seed(task, item),
    }


async def run_task(
    task: SynthTask, teacher: Teacher, out: Path, seen: set[str] | None = None, bar: Any = None
) -> Books:
    """Ask the teacher about every item of ``task`` and write the kept samples to ``out``.

    Args:
        task: The task.
        teacher: The endpoint (with its cache).
        out: The chat JSONL to write (replaced).
        seen: Normalised prompts that already exist (``dedup_against``).
        bar: A rich progress bar to advance, if any.
    """
    books = Books()
    items = source_items(task, books)
    support = None if task.kind == "paraphrase" else task.min_support
    checks = PairFilter(task.min_words, task.max_words, support, seen)
    progress_task = bar.add_task(task.name, total=len(items), info="") if bar else None
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = out.with_name(f".{out.name}.writing")
    with open(scratch, "w", encoding="utf-8") as handle:
        step = teacher.config.concurrency * WINDOW
        for start in range(0, len(items), step):
            window = items[start : start + step]
            bodies = [request_body(teacher.config.model, task, item) for item in window]
            answers = await asyncio.gather(
                *(_ask(teacher, body) for body in bodies), return_exceptions=False
            )
            for item, body, answer in zip(window, bodies, answers, strict=True):
                books.requests += 1
                for sample in _samples(task, item, body, answer, books, checks, teacher):
                    handle.write(json.dumps(sample, ensure_ascii=False) + "\n")
            if bar is not None:
                bar.update(progress_task, advance=len(window), info=f"kept {books.kept}")
    scratch.replace(out)
    return books


async def _ask(teacher: Teacher, body: dict[str, Any]) -> str | TeacherError:
    try:
        return (await teacher.ask(body)).text
    except TeacherError as err:
        return err


def _samples(
    task: SynthTask,
    item: Item,
    body: dict[str, Any],
    answer: str | TeacherError,
    books: Books,
    checks: PairFilter,
    teacher: Teacher,
) -> list[dict[str, Any]]:
    """The kept samples of one answer (the books updated for all of it)."""
    if isinstance(answer, TeacherError):
        books.failed[answer.reason] += 1
        return []
    if task.kind == "paraphrase":
        pairs = [(text, None) for text in prompts.parse_paraphrases(answer)][: task.per_item]
    else:
        pairs = prompts.parse_pairs(task.kind, answer)[: task.per_item]
    if not pairs:
        books.unparsed += 1
        return []
    provenance = {
        "task": task.name,
        "kind": task.kind,
        "teacher": teacher.config.model,
        "prompt_version": task.prompt_version,
        "source_id": item.id,
        "source": item.source,
        "request": request_key(body)[:16],
    }
    kept = []
    for number, (prompt, reply) in enumerate(pairs, 1):
        books.pairs += 1
        why = _check(task, item, prompt, reply, checks)
        if why is not None:
            books.dropped[why] += 1
            continue
        books.kept += 1
        sample_id = f"{task.name}:{item.id}#{number}"
        kept.append(_record(task, item, sample_id, prompt, reply, provenance))
    return kept


def _check(
    task: SynthTask, item: Item, prompt: str, reply: str | None, checks: PairFilter
) -> str | None:
    if reply is None:  # a paraphrase: the rewritten prompt is checked against the original
        if prompts_equal(prompt, item.text):
            return "unchanged"
        return checks.check(prompt, prompt, None)
    return checks.check(prompt, reply, item.text)


def prompts_equal(a: str, b: str) -> bool:
    return normalize_exact(a) == normalize_exact(b)


def _record(
    task: SynthTask,
    item: Item,
    sample_id: str,
    prompt: str,
    reply: str | None,
    provenance: dict[str, Any],
) -> dict[str, Any]:
    if reply is None:  # the original conversation with its last user turn rewritten
        messages = [dict(m) for m in item.messages or []]
        last = max(i for i, m in enumerate(messages) if m["role"] == "user")
        messages[last]["content"] = prompt
        meta = {"synth": provenance, "augmented": "paraphrase", "of": item.id}
        return {"id": sample_id, "messages": messages, "meta": {**meta, SPLIT_GROUP: item.group}}
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]
    meta = {"synth": provenance, SPLIT_GROUP: item.group}
    return {"id": sample_id, "messages": messages, "meta": meta}
