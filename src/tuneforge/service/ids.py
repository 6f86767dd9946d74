"""Ids in OpenAI's shapes: ``file-...``, ``ftjob-...``, ``ftevent-...``, ``ftckpt-...``."""

from __future__ import annotations

import re
import secrets

_ID = re.compile(r"(file|ftjob|ftevent|ftckpt)-[0-9a-f]{24}")


def new_id(prefix: str) -> str:
    """A fresh random id (96 bits) with its kind's prefix."""
    return f"{prefix}-{secrets.token_hex(12)}"


def is_id(value: str, prefix: str) -> bool:
    """Whether ``value`` is an id of kind ``prefix`` (so it is also a safe folder name)."""
    match = _ID.fullmatch(value)
    return match is not None and match.group(1) == prefix
