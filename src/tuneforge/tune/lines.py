"""A line per trial event on stderr: started, validated, finished (with the study's progress).

During a trial the pipeline's own notes and training bar are silenced, so these
lines are the search's progress, the same in one process and in parallel workers.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape

from tuneforge import console


class TrialLines:
    """Prints trial events; bound to the stderr of the moment it is made."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.console = Console(file=sys.stderr, highlight=False, soft_wrap=True)

    def started(self, number: int, values: dict[str, Any]) -> None:
        self.console.print(f"[dim]›[/dim] trial {number}: {show_values(values)}")

    def validated(self, number: int, step: int, loss: float) -> None:
        self.console.print(f"[dim]›[/dim] trial {number} step {step}: val loss {loss:.5g}")

    def finished(
        self,
        number: int,
        state: str,
        loss: float | None,
        seconds: float | None,
        *,
        done: int,
        best: tuple[int, float] | None,
        note: str = "",
    ) -> None:
        colour = {"COMPLETE": "green", "PRUNED": "yellow"}.get(state, "red")
        shown = f" val loss {loss:.5g}" if loss is not None else ""
        took = f" in {seconds:.1f} s" if seconds is not None else ""
        extra = f" ({escape(note)})" if note else ""
        lead = f"[{colour}]{state.lower()}[/{colour}]"
        best_text = f"; best {best[1]:.5g} (trial {best[0]})" if best else ""
        self.console.print(
            f"[bold][{done}/{self.target}][/bold] trial {number} {lead}{shown}{took}{extra}"
            f"{best_text}"
        )


def show_values(values: dict[str, Any]) -> str:
    """``train.lr=0.00012, method.r=16``."""
    return ", ".join(
        f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}"
        for key, value in values.items()
    )


@contextmanager
def pipeline_quiet() -> Iterator[None]:
    """Silence the pipeline's notes and training bar while a trial runs."""
    before = console.err.quiet
    console.err.quiet = True
    try:
        yield
    finally:
        console.err.quiet = before
