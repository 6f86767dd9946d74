"""JSON Lines read strictly: each non-blank line a JSON value, or an error naming file:line."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from tuneforge.errors import DataError, TuneforgeError


def json_lines(
    lines: Iterable[str], name: str, error: type[TuneforgeError] = DataError, prefix: str = ""
) -> Iterator[tuple[str, Any]]:
    """``(place, value)`` for each non-blank line, ``place`` being ``name:line``.

    Args:
        lines: The file's lines (an open file or ``text.splitlines()``).
        name: How the file is named in messages.
        error: Raised (exit code and all) for a line that is not JSON.
        prefix: Put before the place in that message, e.g. ``"red-team prompts: "``.
    """
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        place = f"{name}:{number}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise error(f"{prefix}{place}: not JSON ({err.msg})") from None
        yield place, value
