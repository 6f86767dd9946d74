"""`tuneforge lineage PATH`: the chain from raw data to an exported artifact, re-verified."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.tree import Tree

from tuneforge.console import out
from tuneforge.errors import TuneforgeError
from tuneforge.runs.lineage import Check, find_lineage, summarize, verify

MARKS = {"ok": "[green]ok[/green]", "changed": "[red]CHANGED[/red]", "missing": "[yellow]missing"}


class LineageBroken(TuneforgeError):
    """A file of the chain no longer has the hash it had (exit 1)."""

    exit_code = 1


def lineage(
    path: Annotated[
        Path, typer.Argument(help="An export folder, a file in one, or a run directory.")
    ],
    strict: Annotated[
        bool, typer.Option("--strict", help="Fail on missing files too (not only changed ones).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")] = False,
) -> None:
    """Print the chain raw data -> artifact and check every recorded hash still matches."""
    found = find_lineage(path)
    record, checks = verify(found)
    if as_json:
        rows = [{**vars(c), "status": c.status} for c in checks]
        out.print_json(json.dumps({"lineage": str(found), "record": record, "checks": rows}))
    else:
        out.print(_tree(record, checks, found))
    bad = [c for c in checks if c.status == "changed" or (strict and c.status == "missing")]
    if bad:
        first = bad[0]
        raise LineageBroken(
            f"lineage {found}: {len(bad)} file(s) no longer match, first {first.path} "
            f"({first.step}: {first.status})"
        )


def _tree(record: dict, checks: list[Check], found: Path) -> Tree:
    """Each link nested under the one it came from, with its hashes' state."""
    counts = summarize(checks)
    root = Tree(f"[bold]lineage[/bold] {escape(str(found))}")
    node = root
    for link in record["chain"]:
        tally = counts.get(link["step"], {})
        state = ", ".join(f"{n} {MARKS[s]}" for s, n in tally.items() if n) or "no files"
        info = ", ".join(f"{k} {_short(v)}" for k, v in link.get("info", {}).items())
        where = escape(link["where"])
        node = node.add(
            f"[bold]{link['step']}[/bold] {where}  [dim]{escape(info)}[/dim]  ({state})"
        )
        for check in checks:
            if check.step == link["step"] and (len(link["files"]) <= 3 or check.status != "ok"):
                node.add(f"{MARKS[check.status]} {escape(check.path)} {check.expected[:12]}")
    return root


def _short(value: object) -> str:
    text = str(value)
    return text[:12] if len(text) == 64 else text
