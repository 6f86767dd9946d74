"""What the teacher is asked per task kind, and how its answer is read back.

A template has ``{text}`` (the chunk, or the prompt to paraphrase) and ``{n}`` (how
many items to write). The teacher answers with a JSON list; a list inside prose or a
code fence is found, and ``Q:``/``A:`` lines are accepted for question/answer pairs,
since small teachers rarely keep to JSON.
"""

from __future__ import annotations

import json
import re
from typing import Any

SYSTEM = "You write training data for a language model. Follow the format exactly."

DEFAULT_PROMPTS = {
    "qa": (
        "Read the passage and write {n} questions a reader could ask about it, each with "
        "its answer taken from the passage alone.\n\nPassage:\n{text}\n\n"
        'Answer with a JSON list only: [{{"question": "...", "answer": "..."}}, ...]'
    ),
    "instruction": (
        "Read the passage and write {n} tasks a user could ask an assistant to do with "
        "it (summarise, explain, extract, rewrite), each with the assistant's reply, "
        "using only the passage.\n\nPassage:\n{text}\n\n"
        'Answer with a JSON list only: [{{"instruction": "...", "response": "..."}}, ...]'
    ),
    "paraphrase": (
        "Rewrite the following request {n} different ways. Keep its meaning, facts, "
        "names and numbers; change the wording.\n\nRequest:\n{text}\n\n"
        'Answer with a JSON list of strings only: ["...", ...]'
    ),
}
KEYS = {"qa": ("question", "answer"), "instruction": ("instruction", "response")}
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
_QA_LINES = re.compile(r"^\s*Q\d*[:.)]\s*(.+?)\s*\n\s*A\d*[:.)]\s*(.+?)\s*$", re.M | re.I)


def render(template: str, text: str, n: int) -> str:
    """The prompt for one item.

    Raises:
        ValueError: the template names a field other than ``{text}`` and ``{n}``.
    """
    try:
        return template.format(text=text, n=n)
    except (KeyError, IndexError) as err:
        raise ValueError(f"synth prompt: unknown field {err} (use {{text}} and {{n}})") from None


def check_template(template: str) -> None:
    """Raise ValueError when the template cannot be filled."""
    render(template, "x", 1)


def parse_pairs(kind: str, answer: str) -> list[tuple[str, str]]:
    """``(prompt, reply)`` pairs from a qa or instruction answer (empty when none parse)."""
    first, second = KEYS[kind]
    items = _json_list(answer)
    pairs = []
    for item in items or []:
        if isinstance(item, dict) and isinstance(item.get(first), str):
            reply = item.get(second)
            if isinstance(reply, str):
                pairs.append((item[first].strip(), reply.strip()))
    if not pairs and kind == "qa":
        pairs = [(q.strip(), a.strip()) for q, a in _QA_LINES.findall(answer)]
    return pairs


def parse_paraphrases(answer: str) -> list[str]:
    """The rewrites in a paraphrase answer: a JSON list of strings, or one per line."""
    items = _json_list(answer)
    if items is not None:
        return [item.strip() for item in items if isinstance(item, str) and item.strip()]
    lines = [re.sub(r"^\s*(?:\d+[.)]|[-*])\s*", "", line) for line in answer.splitlines()]
    return [line.strip() for line in lines if line.strip()]


def _json_list(answer: str) -> list[Any] | None:
    """The first JSON list in the answer: whole, in a code fence, or between brackets."""
    candidates = [answer, *_FENCE.findall(answer)]
    start, end = answer.find("["), answer.rfind("]")
    if 0 <= start < end:
        candidates.append(answer[start : end + 1])
    for candidate in candidates:
        try:
            value = json.loads(candidate.strip())
        except json.JSONDecodeError:
            continue
        if isinstance(value, list):
            return value
    return None
