"""`tuneforge data synth CONFIG`: a teacher model writes training data (the synth section)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from tuneforge.cli.common import ConfigArg, SetOpt
from tuneforge.console import out


def synth(
    config: ConfigArg,
    task: Annotated[
        list[str] | None, typer.Option("--task", help="Run only this task (repeatable).")
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Ask the teacher for pairs or paraphrases per source item; cached, so re-runs are free."""
    from tuneforge.config import load_config
    from tuneforge.data.synth.synthesize import synthesize

    loaded = load_config(config, set_)
    results = synthesize(loaded, task)
    table = Table(title=f"synth -> {loaded.synth.out_dir}")
    for column in ("task", "items", "requests", "sent", "cached", "failed", "pairs", "kept"):
        table.add_column(column, justify="left" if column == "task" else "right")
    table.add_column("dropped")
    table.add_column("cost", justify="right")
    for name, books in results.items():
        bill = books["bill"]
        dropped = ", ".join(f"{k} {v}" for k, v in books["dropped"].items()) or "-"
        table.add_row(
            name,
            *(str(v) for v in (books["items"], books["requests"], bill["sent"], bill["cached"])),
            str(sum(books["failed"].values())),
            str(books["pairs"]),
            str(books["kept"]),
            dropped,
            f"{bill['cost']:.4f}",
        )
    out.print(table)
