"""`tuneforge data convert`: any supported dataset -> OpenAI fine-tuning JSONL, with the books."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from tuneforge.console import out, say
from tuneforge.data.formats import FORMATS
from tuneforge.errors import DataError


class Target(StrEnum):
    """Output formats."""

    openai = "openai"


# Record formats the readers know (``auto`` decides per record), from the config schema.
InputFormat = StrEnum("InputFormat", {name: name for name in FORMATS if name != "chat"})


def convert(
    input_path: Annotated[
        Path,
        typer.Argument(metavar="INPUT", help="Dataset file, directory of files, or datasets dir."),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Output file (.jsonl, or .jsonl.gz).")
    ],
    to: Annotated[Target, typer.Option("--to", help="Output format.")] = Target.openai,
    fmt: Annotated[
        InputFormat, typer.Option("--format", "-f", help="Input record format.")
    ] = InputFormat.auto,
    map_: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            metavar="FIELD=COLUMN",
            help="Our field = your column, e.g. --map instruction=question (repeatable).",
        ),
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Stop at the first bad record instead of quarantining.")
    ] = False,
) -> None:
    """Convert a dataset to OpenAI fine-tuning JSONL; bad records go to a quarantine file."""
    from tuneforge.data.readers import read_dataset
    from tuneforge.data.writers import write_openai_jsonl, write_quarantine

    del to  # the only target so far; typer rejects any other value
    if output.resolve() == input_path.resolve():
        raise DataError(f"-o {str(output)!r} is the input; choose another output file")
    result = read_dataset(input_path, fmt.value, mapping=parse_mapping(map_), strict=strict)
    quarantine = quarantine_path(output)
    written = write_openai_jsonl(result.samples, output)
    write_quarantine(result.quarantined, quarantine)
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(result.kinds().items()))
    if len(result.kinds()) > 1:
        say("the output mixes sample kinds; OpenAI fine-tuning takes one kind per file")
    if len(result.files) > 1:
        out.print(books_table(result.books()["files"]))
    for name in result.skipped:
        say(f"skipped {escape(name)}: not a dataset file type")
    out.print(
        f"read {result.read}: converted {written} ({kinds or 'none'}"
        + (f", {result.expanded} from expanding records" if result.expanded else "")
        + "), "
        f"quarantined {len(result.quarantined)} -> {escape(str(output))}",
        soft_wrap=True,
    )
    out.print(f"quarantine: {escape(str(quarantine))}", soft_wrap=True)


def parse_mapping(items: list[str] | None) -> dict[str, str]:
    """``["instruction=question", ...]`` as ``{"instruction": "question", ...}``."""
    mapping = {}
    for item in items or []:
        ours, sep, theirs = item.partition("=")
        if not (sep and ours.strip() and theirs.strip()):
            raise DataError(
                f"--map {item!r}: expected OUR_FIELD=YOUR_COLUMN, e.g. instruction=question"
            )
        mapping[ours.strip()] = theirs.strip()
    return mapping


def quarantine_path(output: Path) -> Path:
    """``out.jsonl`` -> ``out.quarantine.jsonl`` in the same folder."""
    stem = output.name
    for suffix in (".gz", ".jsonl", ".json"):
        stem = stem.removesuffix(suffix)
    return output.with_name(f"{stem}.quarantine.jsonl")


def books_table(files: dict[str, dict[str, int]]) -> Table:
    """Read / converted / quarantined per source file."""
    table = Table(title="Records per file")
    for column in ("file", "read", "converted", "quarantined"):
        table.add_column(column, justify="left" if column == "file" else "right")
    for name, books in files.items():
        table.add_row(
            escape(name), str(books["read"]), str(books["samples"]), str(books["quarantined"])
        )
    return table
