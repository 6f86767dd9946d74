"""`tuneforge data convert-oasst`: an OpenAssistant message table -> trees, chat or pairs."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tuneforge.console import out, say
from tuneforge.errors import DataError


class OasstTarget(StrEnum):
    """What to write: trees (read by ``format: oasst``), best-path chats, or ranked pairs."""

    trees = "trees"
    chat = "chat"
    pairs = "pairs"


def convert_oasst(
    input_path: Annotated[
        Path,
        typer.Argument(
            metavar="MESSAGES", help="OpenAssistant message table (Parquet, JSONL, ...) or folder."
        ),
    ],
    output: Annotated[Path, typer.Argument(metavar="OUT", help="Output JSONL (.jsonl or .gz).")],
    to: Annotated[
        OasstTarget,
        typer.Option(
            "--to",
            help="trees: one tree per line (format: oasst); chat: OpenAI chat JSONL of each "
            "tree's best path; pairs: OpenAI DPO JSONL of its ranked replies.",
        ),
    ] = OasstTarget.trees,
    lang: Annotated[
        list[str] | None,
        typer.Option("--lang", help="Keep trees whose prompt is in this language (repeatable)."),
    ] = None,
) -> None:
    """Group a flat OpenAssistant message table (oasst1/oasst2) by tree and convert it."""
    from tuneforge.data.oasst_table import message_trees, tree_samples
    from tuneforge.data.writers import write_jsonl, write_openai_jsonl

    if output.resolve() == input_path.resolve():
        raise DataError(f"OUT {str(output)!r} is the input; choose another output file")
    table = message_trees(input_path, lang)
    for reason, count in sorted(table.dropped.items()):
        say(f"dropped {count} row(s): {escape(reason)}")
    skipped = f"{table.deleted} deleted and {table.failed_review} failed-review messages"
    if to is OasstTarget.trees:
        written = write_jsonl(table.trees, output)
        out.print(
            f"read {table.rows} messages: {written} trees ({skipped} kept; format: oasst skips "
            f"them) -> {escape(str(output))}",
            soft_wrap=True,
        )
        return
    kind = "chat" if to is OasstTarget.chat else "preference"
    samples, unusable = tree_samples(table.trees, input_path.name, kind)
    for reason, count in unusable.most_common():
        say(f"{count} tree(s) not used: {escape(reason)}")
    written = write_openai_jsonl(samples, output)
    out.print(
        f"read {table.rows} messages in {len(table.trees)} trees: {written} {to.value} "
        f"records ({skipped} skipped) -> {escape(str(output))}",
        soft_wrap=True,
    )
