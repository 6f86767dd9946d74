"""The one place output goes: results to stdout, progress and notes to stderr."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def say(message: str) -> None:
    """A short progress note on stderr."""
    err.print(f"[dim]›[/dim] {message}", soft_wrap=True)


def progress() -> Progress:
    """A progress bar with count, elapsed time, ETA and a free-text field for live metrics."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=16),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(compact=True),
        TextColumn("{task.fields[info]}"),
        console=err,
        transient=False,
        expand=False,
    )


def quiet_libraries() -> None:
    """Silence other libraries' progress bars and deprecation chatter; ours say what matters."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    warnings.filterwarnings("ignore", category=FutureWarning, module="peft")
