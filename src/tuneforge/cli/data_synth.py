"""`tuneforge data synth CONFIG`: a teacher model writes training data (the synth section).

The stage commands that prepare data (``run``, ``data prepare``, ``train``, ``tune``)
run the same tasks first when ``synth.auto`` is on (:func:`synthesize_first`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tuneforge.cli.common import ConfigArg, SetOpt
from tuneforge.config import Config
from tuneforge.console import err, out


def synth(
    config: ConfigArg,
    task: Annotated[
        list[str] | None, typer.Option("--task", help="Run only this task (repeatable).")
    ] = None,
    export_answers: Annotated[
        Path | None,
        typer.Option(
            "--export-answers",
            help="Then write the tasks' answers to this file, for synth.answers elsewhere.",
        ),
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Ask the teacher for pairs or paraphrases per source item; cached, so re-runs are free."""
    from tuneforge.config import load_config
    from tuneforge.data.synth.synthesize import export_answers as export
    from tuneforge.data.synth.synthesize import synthesize

    loaded = load_config(config, set_)
    results = synthesize(loaded, task)
    print_synth(results, loaded.synth.out_dir, out)
    if export_answers is not None:
        counts = export(loaded, export_answers, task)
        out.print(
            f"answers: {counts['written']} written to {export_answers}"
            + (f", {counts['missing']} requests unanswered" if counts["missing"] else "")
        )


def synthesize_first(config: Config) -> None:
    """Run the synth tasks before the data is read, when the config has them and ``auto``."""
    synth = config.synth
    if not (synth.auto and synth.tasks):
        return
    from tuneforge.data.synth.synthesize import synthesize

    results = synthesize(config)
    print_synth(results, synth.out_dir, err)
    for name, books in results.items():
        failed = sum(books["failed"].values())
        if failed:
            reasons = ", ".join(f"{why} {n}" for why, n in books["failed"].items())
            err.print(
                f"[yellow]synth {name}: {failed} of {books['requests']} requests failed "
                f"({reasons}); the data has the answered ones. Run again to retry the rest.[/]"
            )


def print_synth(results: dict[str, Any], out_dir: str, console: Console) -> None:
    """One row per task: items, requests sent and cached, pairs kept and dropped, the cost."""
    table = Table(title=f"synth -> {out_dir}")
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
    console.print(table)
