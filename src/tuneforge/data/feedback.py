"""Human feedback files: K sampled replies per prompt out for ranking, preference pairs back in.

``tuneforge feedback sample`` writes one JSON line per prompt::

    {"id": "...", "prompt": [messages], "responses": [{"content": "...", "rank": null}, ...]}

A labeller ranks the replies by setting each ``rank`` (1 is best; ties allowed) or by
adding ``"ranking": [indices, best first]``. The labelled file is the ``ranked`` input
format of the data stage, so ``tuneforge data prepare`` reads it directly;
``tuneforge feedback pairs`` turns it into preference pairs (rank 1 against each lower
rank). A line left unranked is quarantined with its reason, never guessed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneforge.data.formats import BadRecord, given_prompt
from tuneforge.data.readers import read_dataset
from tuneforge.data.render import prompt_messages
from tuneforge.data.sample import Message
from tuneforge.data.sources import dataset_files, iter_records
from tuneforge.data.writers import write_openai_jsonl
from tuneforge.errors import DataError


def read_prompts(path: str | Path) -> list[tuple[str, list[Message], Any]]:
    """``(id, prompt messages, tools)`` of each record of a dataset file or folder.

    A record gives its prompt as ``messages`` or ``conversations`` (the turns before a
    final assistant reply, if there is one), ``prompt`` (text or messages) or
    ``instruction`` (+ ``input``).

    Raises:
        DataError: a record is malformed or has no prompt (names the file and line).
    """
    files, _ = dataset_files(Path(path))
    prompts = []
    for entry in files:
        for record in iter_records(entry):
            value = record.value
            try:
                if isinstance(value, BadRecord) or not isinstance(value, dict):
                    raise BadRecord(str(value) if isinstance(value, BadRecord) else "not an object")
                messages = given_prompt(value, None)
            except BadRecord as bad:
                raise DataError(f"{record.source}: {bad}") from None
            if not messages:
                raise DataError(f"{record.source}: no prompt (messages, prompt or instruction)")
            if messages[-1]["role"] == "assistant":
                messages = prompt_messages(messages)[0]
            prompts.append((str(value.get("id", record.source)), messages, value.get("tools")))
    if not prompts:
        raise DataError(f"{path}: no prompts found")
    return prompts


def write_labelling_file(
    path: str | Path, prompts: list[tuple[str, list[Message], Any]], replies: list[list[str]]
) -> int:
    """Write one unranked record per prompt with its replies; returns the lines written."""
    with open(path, "w", encoding="utf-8") as handle:
        for (key, messages, tools), texts in zip(prompts, replies, strict=True):
            record: dict[str, Any] = {
                "id": key,
                "prompt": messages,
                "responses": [{"content": text, "rank": None} for text in texts],
            }
            if tools:
                record["tools"] = tools
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return len(prompts)


def labelled_pairs(path: str | Path, out: str | Path) -> dict[str, Any]:
    """Turn a labelled file into preference pairs (OpenAI preference JSONL at ``out``).

    Returns:
        ``records`` read, ``pairs`` written, ``unlabelled`` (quarantined) and their reasons.
    """
    read = read_dataset(path, "ranked")
    written = write_openai_jsonl(read.samples, out)
    reasons: dict[str, int] = {}
    for item in read.quarantined:
        reasons[item.reason] = reasons.get(item.reason, 0) + 1
    return {
        "records": read.read,
        "pairs": written,
        "unlabelled": len(read.quarantined),
        "reasons": reasons,
    }
