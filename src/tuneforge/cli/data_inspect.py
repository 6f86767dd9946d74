"""`tuneforge data inspect`: show samples as the model will be trained on them.

Each sample is rendered by the one rendering function and printed token run by
token run, trained tokens in bold green and the rest dim, so a wrong template or
mask is visible before any training starts.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from tuneforge.console import out

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from tuneforge.data.render import Rendered

TRAINED_STYLE = "bold green"
UNTRAINED_STYLE = "dim"


class TrainOnChoice(StrEnum):
    """Which tokens carry loss."""

    assistant = "assistant"
    last_assistant = "last_assistant"
    all = "all"


class TemplateChoice(StrEnum):
    """Fallback chat templates."""

    chatml = "chatml"
    llama_3 = "llama-3"
    alpaca = "alpaca"


def inspect(
    file: Annotated[Path, typer.Argument(help="Dataset file or directory.")],
    model: Annotated[
        str, typer.Option("--model", "-m", help="Model folder (or hub id) whose tokenizer renders.")
    ],
    n: Annotated[int, typer.Option("-n", min=1, help="How many samples to show.")] = 3,
    train_on: Annotated[
        TrainOnChoice, typer.Option("--train-on", help="Which tokens carry loss.")
    ] = TrainOnChoice.assistant,
    template: Annotated[
        TemplateChoice | None,
        typer.Option("--template", help="Use a fallback chat template instead of the model's."),
    ] = None,
    max_length: Annotated[
        int | None, typer.Option("--max-length", min=1, help="Cut each sample to this many tokens.")
    ] = None,
) -> None:
    """Print the first samples with their trained tokens highlighted, and token counts."""
    from tuneforge.data.readers import read_dataset
    from tuneforge.data.render import render_chat
    from tuneforge.models.load import load_tokenizer

    samples = read_dataset(file).samples[:n]
    tokenizer = load_tokenizer(model)
    total = trained = 0
    for sample in samples:
        rendered = render_chat(
            tokenizer,
            sample.messages,
            max_length=max_length,
            train_on=train_on.value,
            tools=sample.tools,
            template=template.value if template else None,
        )
        total += len(rendered.input_ids)
        trained += rendered.trained_tokens
        title = sample.source if sample.id == sample.source else f"{sample.id} ({sample.source})"
        out.rule(Text(title), align="left")
        out.print(highlight(tokenizer, rendered), soft_wrap=True)
        out.print(f"tokens: {len(rendered.input_ids)} total, {rendered.trained_tokens} trained")
    out.print(f"{len(samples)} samples shown: {total} tokens, {trained} trained")


def highlight(tokenizer: PreTrainedTokenizerBase, rendered: Rendered) -> Text:
    """The rendered text, each run of trained tokens styled as trained, the rest as untrained.

    Runs are decoded whole, not token by token, so characters split across byte-level
    tokens come out intact.
    """
    from tuneforge.train.loss import IGNORE_INDEX

    text = Text()
    run: list[int] = []
    run_trained = False
    for token, label in zip(rendered.input_ids, rendered.labels, strict=True):
        is_trained = label != IGNORE_INDEX
        if run and is_trained != run_trained:
            text.append(tokenizer.decode(run), TRAINED_STYLE if run_trained else UNTRAINED_STYLE)
            run = []
        run.append(token)
        run_trained = is_trained
    if run:
        text.append(tokenizer.decode(run), TRAINED_STYLE if run_trained else UNTRAINED_STYLE)
    return text
