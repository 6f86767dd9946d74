"""Record formats of well-known public datasets: OpenAssistant trees and Dolly.

- ``oasst``: one OpenAssistant message tree per record, as in the ``*.trees.jsonl``
  exports of oasst1/oasst2: ``{"message_tree_id", "prompt": node}``, each node
  ``{"message_id", "role": "prompter"|"assistant", "text", "rank", "lang",
  "deleted", "review_result", "replies": [node, ...]}``. Deleted messages and
  messages that failed review are skipped, and their replies with them; the chat
  sample's ``meta["skipped_messages"]`` counts them by reason (not the replies
  below them). The record gives one chat sample, the best
  path: from the prompt, the reply of lowest ``rank`` each time (0 is best; an
  unranked reply comes after ranked ones, then list order decides), cut after
  its last assistant turn. It also gives one preference sample per ranked
  assistant sibling that lost to the best one (``chosen`` rank 0, ``rejected``
  rank 1, 2, ...), at every prompter message of the tree, its prompt being the
  path to that message; their ids are ``<record id>#1``, ``#2``, .... All of a
  tree's samples share its split (``meta["split_group"]``). The data
  stage's ``kind`` step keeps what the objective trains on: the chat sample for
  sft, the pairs for dpo/reward/orpo/simpo/kto. A flat message table (one
  message per row) must be grouped into trees first (``tuneforge data
  convert-oasst``); its rows are recognised and quarantined with that advice.
- ``dolly``: databricks-dolly-15k's ``instruction``, ``context`` (optional),
  ``response`` and ``category``: the user turn is the instruction, then a blank
  line and the context when there is one; the response is the assistant turn;
  the category is kept in ``meta["category"]``.

Every problem raises :class:`BadRecord` with a one-line reason naming the key.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from tuneforge.data.messages import BadRecord, with_system
from tuneforge.data.sample import Message, Sample
from tuneforge.data.split import SPLIT_GROUP

OASST_ROLES = {"prompter": "user", "assistant": "assistant"}
ROLE_NAMES = tuple(OASST_ROLES)  # a tuple: `in` must not hash whatever the record holds
# Whole-table keys of a flat oasst message row; a tree record has a "prompt" node instead.
OASST_ROW_KEYS = ("message_id", "message_tree_id", "role")
Node = dict[str, Any]


def detect_wild(record: dict[str, Any]) -> str | None:
    """``oasst``, ``labelstudio`` or ``dolly`` when the record's keys say so unambiguously."""
    prompt = record.get("prompt")
    if isinstance(prompt, dict) and ("replies" in prompt or prompt.get("role") in ROLE_NAMES):
        return "oasst"
    if all(key in record for key in OASST_ROW_KEYS) and record.get("role") in ROLE_NAMES:
        return "oasst"
    if "annotations" in record and isinstance(record.get("data"), dict):
        return "labelstudio"
    if "instruction" in record and "response" in record and "output" not in record:
        return "dolly"
    return None


# --- OpenAssistant ---------------------------------------------------------------------------


def oasst_samples(record: dict[str, Any], system_prompt: str | None = None) -> list[Sample]:
    """The best-path chat sample of an OpenAssistant tree, then its ranked preference pairs.

    Args:
        record: One tree: ``{"message_tree_id", "prompt": node}``.
        system_prompt: Unused; OpenAssistant conversations have no system turn.

    Returns:
        The chat sample (id suffix ``""``), then the pairs (``#1``, ``#2``, ...).

    Raises:
        BadRecord: a flat message row, a malformed node, or no usable assistant reply.
    """
    del system_prompt
    if "prompt" not in record and all(key in record for key in OASST_ROW_KEYS):
        raise BadRecord(
            "an OpenAssistant message row, not a tree: group the table into trees first "
            "with `tuneforge data convert-oasst`"
        )
    root = _message_object(record.get("prompt"), "prompt")
    if (why := _skip_reason(root)) is not None:
        raise BadRecord(f"oasst tree: the prompt {why}")
    _node(root, "prompt")
    if root["role"] != "prompter":
        raise BadRecord(f"prompt.role must be 'prompter', got {root['role']!r}")
    skipped: Counter[str] = Counter()
    pairs = _pairs(root, "prompt", [], skipped)  # visits every usable message, so counts all skips
    path = _best_path(root)
    while path[-1]["role"] != "assistant" and len(path) > 1:
        path.pop()
    if path[-1]["role"] != "assistant":
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(skipped.items())) or "none"
        raise BadRecord(f"oasst tree has no usable assistant reply (skipped replies: {reasons})")
    meta = _tree_meta(record, root)
    for number, pair in enumerate(pairs, 1):
        pair.id, pair.meta = f"#{number}", dict(meta)
    if skipped:
        meta["skipped_messages"] = dict(skipped)
    chat = Sample(id="", kind="chat", source="", messages=_messages(path), meta=meta)
    return [chat, *pairs]


def _tree_meta(record: dict[str, Any], root: Node) -> dict[str, Any]:
    meta = {}
    if isinstance(root.get("lang"), str):
        meta["lang"] = root["lang"]
    if isinstance(record.get("message_tree_id"), str):
        meta["message_tree_id"] = record["message_tree_id"]
        meta[SPLIT_GROUP] = f"oasst:{record['message_tree_id']}"  # one tree, one split
    return meta


def _message_object(value: Any, where: str) -> Node:
    if not isinstance(value, dict):
        shown = "missing" if value is None else f"a {type(value).__name__}"
        raise BadRecord(f"{where} must be a message object, got {shown}")
    return value


def _node(node: Node, where: str) -> Node:
    """The node, its role, text and rank checked (a skipped message is never checked)."""
    role, text = node.get("role"), node.get("text")
    if role not in ROLE_NAMES:
        raise BadRecord(f"{where}.role {role!r} is not 'prompter' or 'assistant'")
    if not isinstance(text, str) or not text.strip():
        raise BadRecord(f"{where}.text must be non-empty text")
    rank = node.get("rank")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int | float)):
        raise BadRecord(f"{where}.rank must be a number or null, got {repr(rank)[:20]}")
    return node


def _rank(node: Node) -> float | None:
    """The message's rank (0 is best), None when unranked (columnar files give NaN for that)."""
    rank = node.get("rank")
    return None if rank is None or rank != rank else rank  # NaN is the one value unequal to itself


def _skip_reason(node: Node) -> str | None:
    """Why a message is not used (deleted, failed review), or None to use it."""
    if node.get("deleted") is True:
        return "was deleted"
    if node.get("review_result") is False:  # None means not reviewed yet, which is usable
        return "failed review"
    return None


def _replies(node: Node, where: str, skipped: Counter[str] | None = None) -> list[tuple[Node, str]]:
    """The usable replies of a node with where each is, best first (rank, then list order)."""
    replies = node.get("replies") or []
    if not isinstance(replies, list):
        raise BadRecord(f"{where}.replies must be a list")
    usable = []
    for index, value in enumerate(replies):
        child_where = f"{where}.replies[{index}]"
        child = _message_object(value, child_where)
        if (why := _skip_reason(child)) is not None:
            if skipped is not None:
                skipped[why.removeprefix("was ")] += 1
        else:
            usable.append((_node(child, child_where), child_where))
    return sorted(usable, key=lambda item: _rank_key(item[0]))


def _rank_key(node: Node) -> tuple[bool, float]:
    rank = _rank(node)
    return (rank is None, 0 if rank is None else rank)


def _best_path(root: Node) -> list[Node]:
    path, where = [root], "prompt"
    while replies := _replies(path[-1], where):
        best, where = replies[0]
        path.append(best)
    return path


def _pairs(node: Node, where: str, path: list[Node], skipped: Counter[str]) -> list[Sample]:
    """Preference samples at this prompter message and below it, depth first."""
    path = [*path, node]
    replies = _replies(node, where, skipped)
    found: list[Sample] = []
    ranked = [c for c, _ in replies if c["role"] == "assistant" and _rank(c) is not None]
    if node["role"] == "prompter" and ranked:
        best = ranked[0]
        found += [
            Sample(
                id="",
                kind="preference",
                source="",
                messages=_messages(path),
                chosen=_messages([best]),
                rejected=_messages([loser]),
            )
            for loser in ranked[1:]
            if _rank(loser) > _rank(best)  # type: ignore[operator]
        ]
    for child, child_where in replies:
        found += _pairs(child, child_where, path, skipped)
    return found


def _messages(path: list[Node]) -> list[Message]:
    return [{"role": OASST_ROLES[node["role"]], "content": node["text"]} for node in path]


# --- Dolly -----------------------------------------------------------------------------------


def dolly_sample(record: dict[str, Any], system_prompt: str | None = None) -> Sample:
    """A chat sample from a databricks-dolly-15k record, its category kept in ``meta``.

    Raises:
        BadRecord: instruction or response missing, empty or not text; context or
            category not text.
    """
    instruction, response = _text(record, "instruction"), _text(record, "response")
    context = record.get("context", "")
    if not isinstance(context, str):
        raise BadRecord("'context' must be a string")
    prompt = f"{instruction}\n\n{context}" if context.strip() else instruction
    messages = with_system(
        record.get("system") or system_prompt,
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
    )
    category = record.get("category")
    if category is not None and not isinstance(category, str):
        raise BadRecord(f"'category' must be a string, got {repr(category)[:40]}")
    meta = {"category": category} if category else {}
    return Sample(id="", kind="chat", source="", messages=messages, meta=meta)


def _text(record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    if value is None:
        raise BadRecord(f"missing field '{key}'")
    if not isinstance(value, str):
        raise BadRecord(f"'{key}' must be a string")
    if not value.strip():
        raise BadRecord(f"empty {key}")
    return value
