"""`tuneforge data labelstudio ...`: tasks for labelling replies, and the labels read back."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tuneforge.cli.data_convert import InputFormat, quarantine_path
from tuneforge.console import out, say
from tuneforge.errors import DataError

labelstudio_app = typer.Typer(
    help="Label Studio: export prompts as labelling tasks, import the labelled replies.",
    no_args_is_help=True,
)


@labelstudio_app.command("export")
def export(
    data: Annotated[Path, typer.Argument(help="Dataset file or directory (any format).")],
    output: Annotated[
        Path, typer.Argument(metavar="OUT.json", help="Tasks file; the config goes to OUT.xml.")
    ],
    fmt: Annotated[
        InputFormat, typer.Option("--format", "-f", help="Input record format.")
    ] = InputFormat.auto,
) -> None:
    """Write Label Studio tasks (prompt, existing reply) and the labelling config beside them."""
    from tuneforge.data.labelstudio import config_path, export_tasks

    if output.suffix != ".json":
        raise DataError(f"OUT {str(output)!r}: name the tasks file .json (Label Studio imports it)")
    books = export_tasks(data, output, fmt.value)
    for reason, count in books.skipped.most_common():
        say(f"skipped {count}: {escape(reason)}")
    out.print(
        f"{books.tasks} tasks ({books.with_reply} with a reply to correct) -> "
        f"{escape(str(output))}; labelling config -> {escape(str(config_path(output)))}",
        soft_wrap=True,
    )


@labelstudio_app.command("import")
def import_(
    export_file: Annotated[
        Path, typer.Argument(metavar="EXPORT.json", help="A Label Studio project's JSON export.")
    ],
    output: Annotated[
        Path, typer.Argument(metavar="OUT.jsonl", help="OpenAI chat JSONL (.jsonl or .gz).")
    ],
) -> None:
    """Read labelled replies from a Label Studio JSON export into OpenAI chat JSONL."""
    from collections import Counter

    from tuneforge.data.labelstudio import import_export
    from tuneforge.data.writers import write_openai_jsonl, write_quarantine

    if output.resolve() == export_file.resolve():
        raise DataError(f"OUT {str(output)!r} is the input; choose another output file")
    books = import_export(export_file)
    written = write_openai_jsonl(books.samples, output)
    write_quarantine(books.quarantined, quarantine_path(output))
    for reason, count in books.annotations_dropped.most_common():
        say(f"{count} annotation(s) not used: {reason}")
    for reason, count in Counter(q.reason for q in books.quarantined).most_common():
        say(f"{count} task(s) not used: {escape(reason)}")
    if books.disagreements:
        ids = books.disagreements
        shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
        say(f"{len(ids)} task(s) where annotators disagree (most recent taken): {escape(shown)}")
    out.print(
        f"read {books.tasks} tasks: {written} labelled replies, {len(books.quarantined)} "
        f"quarantined -> {escape(str(output))}",
        soft_wrap=True,
    )
