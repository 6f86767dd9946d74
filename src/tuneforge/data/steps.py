"""Small generator steps over Samples, and the books they keep.

A step takes an iterable of Samples and yields Samples. Each step counts what
it saw, kept, changed and dropped (by reason) in a :class:`StepStats`, so a
pipeline's books always balance: ``seen = kept + dropped`` for every step. A
step drops a sample through :meth:`StepStats.drop`, which also hands it to the
books' ``on_drop`` callback when one is set (the data stage lists them).
Executors (local here, Spark in :mod:`tuneforge.data.spark`) run the same steps.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from tuneforge.data.sample import Sample

OnDrop = Callable[[str, Sample, str], None]
"""Called with the step's name, the dropped sample and the reason."""


@dataclass
class StepStats:
    """What one step did.

    Attributes:
        name: The step's name.
        seen: Samples that reached the step.
        kept: Samples it passed on.
        changed: Kept samples it rewrote.
        dropped: Samples it dropped, by reason.
        on_drop: Called for every dropped sample, if set.
    """

    name: str
    seen: int = 0
    kept: int = 0
    changed: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    on_drop: OnDrop | None = field(default=None, compare=False, repr=False)

    def drop(self, sample: Sample | None, reason: str) -> None:
        """Count a dropped sample under ``reason`` and hand it to ``on_drop``.

        Args:
            sample: The dropped sample; None where an executor only counts (Spark).
            reason: Why it was dropped.
        """
        self.dropped[reason] += 1
        if self.on_drop is not None and sample is not None:
            self.on_drop(self.name, sample, reason)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seen": self.seen,
            "kept": self.kept,
            "changed": self.changed,
            "dropped": dict(self.dropped),
        }

    def balanced(self) -> bool:
        return self.seen == self.kept + sum(self.dropped.values())


class Step(Protocol):
    """A named transformation of a stream of samples that records its counts."""

    name: str

    def __call__(self, samples: Iterable[Sample], stats: StepStats) -> Iterator[Sample]: ...


@dataclass
class FilterStep:
    """Keep samples the predicate accepts; the predicate returns ``(keep, reason)``."""

    name: str
    predicate: Callable[[Sample], tuple[bool, str | None]]

    def __call__(self, samples: Iterable[Sample], stats: StepStats) -> Iterator[Sample]:
        for sample in samples:
            stats.seen += 1
            keep, reason = self.predicate(sample)
            if keep:
                stats.kept += 1
                yield sample
            else:
                stats.drop(sample, reason or self.name)


@dataclass
class MapStep:
    """Rewrite samples; ``fn`` returns the new sample (or the same one) and whether it changed."""

    name: str
    fn: Callable[[Sample], tuple[Sample, bool]]

    def __call__(self, samples: Iterable[Sample], stats: StepStats) -> Iterator[Sample]:
        for sample in samples:
            stats.seen += 1
            new, changed = self.fn(sample)
            stats.kept += 1
            stats.changed += int(changed)
            yield new


def run_steps(samples: Iterable[Sample], steps: list[Step]) -> tuple[list[Sample], list[StepStats]]:
    """Run steps in order over a stream (local executor) and return the survivors and the books."""
    stream, stats = chain_steps(samples, steps)
    kept = list(stream)
    check_balanced(stats)
    return kept, stats


def chain_steps(
    samples: Iterable[Sample], steps: list[Step], on_drop: OnDrop | None = None
) -> tuple[Iterator[Sample], list[StepStats]]:
    """Chain steps lazily: the survivors stream out one at a time, the books fill as they do.

    Call :func:`check_balanced` on the books once the stream is exhausted.

    Args:
        samples: The samples to run through the steps.
        steps: The steps, in order.
        on_drop: Given to every step's books; called for each sample a step drops.

    Returns:
        The survivors (a lazy stream) and each step's books.
    """
    stats = [StepStats(step.name, on_drop=on_drop) for step in steps]
    stream: Iterable[Sample] = samples
    for step, record in zip(steps, stats, strict=True):
        stream = step(stream, record)
    return iter(stream), stats


def check_balanced(stats: list[StepStats]) -> None:
    """Raise when a step's books do not balance (a bug, never bad input)."""
    for record in stats:
        if not record.balanced():
            raise AssertionError(f"step {record.name} does not balance: {record.to_json()}")
