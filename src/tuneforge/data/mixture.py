"""Mixtures: several datasets (``data.sources``) sampled into one training set (``data.mix``).

Each source is read on its own (its format, mapping and system prompt), and its
samples carry ``meta["source_name"]``. The sources are cleaned and deduplicated
together; the mix then decides, per source, how many of its *usable* samples
(those that survived the steps) go into the training set, before the split:

1. A source's cap (``max_samples``) keeps a seeded random subset of that size;
   the rest are dropped as ``mix_cap:<source>``.
2. Each source gets a target share ``p_i`` of the mix, from the counts ``n_i``
   left after the caps: ``concat`` takes every sample (``p_i = n_i / sum(n)``);
   ``weights`` uses ``p_i = w_i / sum(w)``; ``temperature`` uses
   ``p_i = w_i * n_i^(1/T) / sum_j(w_j * n_j^(1/T))`` (T = 1: by size; larger T
   flattens toward uniform).
3. The mix holds ``N`` samples: ``mix.total``, or by default the most the shares
   allow without repeating a sample, ``N = floor(min_i(n_i / p_i))`` (with
   ``allow_repeat``: ``N = round(max_i(n_i / p_i))``, every sample used at least
   once). Source ``i`` gets ``p_i * N`` samples, rounded by largest remainder so
   that they add up to ``N``.
4. A seeded random subset of that size is taken from each source, in reading
   order; the others are dropped as ``mix_sampled_out:<source>``. With
   ``allow_repeat`` a source whose target exceeds its count repeats its samples
   (each ``target // n`` times, a random ``target % n`` of them once more).

The split then sees each taken sample once, so a repeated sample can never sit
in two splits, and only the training split holds the copies: validation and test
data are not inflated by duplicates. The copies are counted as ``repeated``, so
the books read ``read + expanded + repeated = kept + dropped + quarantined``.

Each source draws from its own random generator (seeded by the run's seed and the
source's name), so changing one source leaves the others' picks alone. The mix
runs on the driver after the steps, for the local and the Spark engine alike.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.config.mix_schema import MixConfig, SourceConfig
from tuneforge.config.schema import DataConfig
from tuneforge.data.readers import SOURCE_KEY, DatasetStream, Quarantined, SourcesStream
from tuneforge.data.sample import Sample
from tuneforge.data.steps import StepStats
from tuneforge.errors import DataError

MIX_STEP = "mix"
CAPPED = -1  # MixPlan.copies of a sample over its source's cap (0: sampled out)


def open_sources(data: DataConfig, on_quarantine: Callable[[Quarantined], None]) -> SourcesStream:
    """Every source of ``data.sources`` as one stream; unset keys follow ``data``'s."""
    streams = [
        DatasetStream(
            source.path,
            source.format or data.format,
            source.system_prompt if source.system_prompt is not None else data.system_prompt,
            mapping=(source.mapping if source.mapping is not None else data.mapping) or None,
            strict=data.strict,
            on_quarantine=on_quarantine,
            key=f"data.sources[{index}].path",
            source_name=source.name,
            chunking=data.chunking.as_tuple(),
        )
        for index, source in enumerate(data.sources or [])
    ]
    return SourcesStream(streams)


@dataclass
class SourceMix:
    """What the mix did with one source's usable samples."""

    usable: int = 0
    capped: int = 0
    sampled_out: int = 0
    taken: int = 0
    repeated: int = 0  # copies planned; the training split gets those of its samples
    share: float = 0.0  # the target share p_i


@dataclass
class MixPlan:
    """The mix's decision for each usable sample, by position in the cleaned stream.

    Attributes:
        copies: How many times each sample goes into the mix; 0 when sampled out,
            :data:`CAPPED` when over its source's cap (an int each: no reason strings
            held per sample).
        total: Samples in the mix, repeats included.
        sources: Figures per source name.
    """

    copies: list[int]
    total: int = 0
    sources: dict[str, SourceMix] = field(default_factory=dict)


def plan_mix(names: list[str], sources: list[SourceConfig], mix: MixConfig, seed: int) -> MixPlan:
    """Decide which usable samples go into the mix, and how often.

    Args:
        names: The source name of each usable sample, in stream order.
        sources: The configured sources (``data.sources``).
        mix: The mix settings (``data.mix``).
        seed: The run's seed.

    Raises:
        DataError: ``mix.total`` needs more samples than a source has (without
            ``allow_repeat``), or a weighted source has no usable sample.
    """
    plan = MixPlan(copies=[0] * len(names))
    positions: dict[str, list[int]] = {s.name: [] for s in sources}
    for position, name in enumerate(names):
        positions[name].append(position)
    rngs = {s.name: random.Random(f"tuneforge-mix:{seed}:{s.name}") for s in sources}
    for source in sources:
        plan.sources[source.name] = SourceMix(usable=len(positions[source.name]))
        kept = _subset(positions[source.name], source.max_samples, rngs[source.name])
        for position in set(positions[source.name]).difference(kept):
            plan.copies[position] = CAPPED
        plan.sources[source.name].capped = len(positions[source.name]) - len(kept)
        positions[source.name] = kept
    available = {name: len(kept) for name, kept in positions.items()}
    shares = target_shares(available, sources, mix)
    targets = mix_targets(available, shares, mix)
    for source in sources:
        figures = plan.sources[source.name]
        figures.share = shares[source.name]
        _take(positions[source.name], targets[source.name], rngs[source.name], plan, source.name)
    plan.total = sum(targets.values())
    return plan


def _subset(positions: list[int], size: int | None, rng: random.Random) -> list[int]:
    """A seeded random ``size`` of ``positions``, in order (all of them when they fit)."""
    if size is None or len(positions) <= size:
        return positions
    return sorted(rng.sample(positions, size))


def _take(kept: list[int], target: int, rng: random.Random, plan: MixPlan, name: str) -> None:
    """Set the copies of one source's positions so that they add up to ``target``."""
    figures = plan.sources[name]
    if target <= len(kept):
        for position in _subset(kept, target, rng):
            plan.copies[position] = 1  # the others stay 0: sampled out
        figures.taken, figures.sampled_out = target, len(kept) - target
        return
    rounds, extra = divmod(target, len(kept))
    once_more = set(rng.sample(kept, extra))
    for position in kept:
        plan.copies[position] = rounds + (position in once_more)
    figures.taken, figures.repeated = len(kept), target - len(kept)


def target_shares(
    available: dict[str, int], sources: list[SourceConfig], mix: MixConfig
) -> dict[str, float]:
    """Each source's share ``p_i`` of the mix (they add up to 1, or are all 0 when empty)."""
    if mix.strategy == "concat":
        raw = {s.name: float(available[s.name]) for s in sources}
    elif mix.strategy == "weights":
        raw = {s.name: s.weight for s in sources}
    else:
        raw = {s.name: s.weight * available[s.name] ** (1 / mix.temperature) for s in sources}
    whole = sum(raw.values())
    return {name: value / whole if whole else 0.0 for name, value in raw.items()}


def mix_targets(
    available: dict[str, int], shares: dict[str, float], mix: MixConfig
) -> dict[str, int]:
    """Samples per source: ``shares`` of the mix's size, adding up to it exactly.

    Raises:
        DataError: as :func:`plan_mix` says.
    """
    wanted = [name for name, share in shares.items() if share > 0]
    empty = [name for name in wanted if available[name] == 0]
    if empty:
        raise DataError(
            f"data.sources {empty[0]!r}: no usable samples after cleaning, so its weight "
            "cannot be met; fix its data or remove it from data.sources"
        )
    if not wanted:
        return dict.fromkeys(shares, 0)
    if mix.strategy == "concat" and mix.total is None:
        return dict(available)
    ratios = [available[name] / shares[name] for name in wanted]
    if mix.total is not None:
        size = mix.total
    elif mix.allow_repeat:
        size = round(max(ratios))
    else:
        size = math.floor(min(ratios) + 1e-9)
    targets = _allocate(size, shares)
    while not mix.allow_repeat and mix.total is None and _short(targets, available):
        size -= 1  # rounding noise only: a step or two at most
        targets = _allocate(size, shares)
    short = _short(targets, available)
    if short and not mix.allow_repeat:
        most = math.floor(min(ratios) + 1e-9)
        raise DataError(
            f"data.mix.total {size}: source {short!r} has {available[short]} usable samples "
            f"but its share ({shares[short]:.1%}) needs {targets[short]}; lower data.mix.total "
            f"(at most {most} without repeats) or set data.mix.allow_repeat: true"
        )
    return targets


def _allocate(size: int, shares: dict[str, float]) -> dict[str, int]:
    """``size`` split by ``shares`` with largest remainders (ties: the earlier source)."""
    exact = {name: share * size for name, share in shares.items()}
    counts = {name: math.floor(value) for name, value in exact.items()}
    left = size - sum(counts.values())
    by_remainder = sorted(exact, key=lambda name: counts[name] - exact[name])
    for name in by_remainder[:left]:
        counts[name] += 1
    return counts


def _short(targets: dict[str, int], available: dict[str, int]) -> str | None:
    return next((name for name, n in targets.items() if n > available[name]), None)


class Mixer:
    """The mix as a step over the cleaned stream: spill it, plan, then stream the mix out.

    The usable samples are written to ``spill`` first (the plan needs every
    source's count), holding one source name per sample in memory; dropped ones
    go through ``stats.drop``, taken ones are yielded once each. The copies of
    repeated ones are made for the training split only (:meth:`train_copies`).
    """

    name = MIX_STEP

    def __init__(self, data: DataConfig, seed: int, spill: Path) -> None:
        self.sources = list(data.sources or [])
        self.mix, self.seed, self.spill = data.mix, seed, spill
        self.plan: MixPlan | None = None
        self.repeats: dict[int, tuple[int, str]] = {}  # output index -> (copies, source)

    def __call__(self, samples: Iterable[Sample], stats: StepStats) -> Iterator[Sample]:
        names = []
        with open(self.spill, "w", encoding="utf-8") as handle:
            for sample in samples:
                handle.write(json.dumps(dataclasses.asdict(sample), default=str) + "\n")
                names.append(sample.meta[SOURCE_KEY])
        self.plan = plan_mix(names, self.sources, self.mix, self.seed)
        with open(self.spill, encoding="utf-8") as handle:
            for position, line in enumerate(handle):
                sample = Sample(**json.loads(line))
                stats.seen += 1
                copies = self.plan.copies[position]
                if copies < 1:
                    why = "mix_cap" if copies == CAPPED else "mix_sampled_out"
                    stats.drop(sample, f"{why}:{names[position]}")
                    continue
                if copies > 1:
                    self.repeats[stats.kept] = (copies, names[position])
                stats.kept += 1
                yield sample
        self.spill.unlink()

    def train_copies(self, assigned: list[str]) -> tuple[dict[int, int], Counter[str]]:
        """The copies of each repeated sample that the split put in training, by output
        index, and the extra copies that makes per source."""
        copies: dict[int, int] = {}
        extra: Counter[str] = Counter()
        for index, (count, name) in self.repeats.items():
            if assigned[index] == "train":
                copies[index] = count
                extra[name] += count - 1
        return copies, extra


def mix_books(
    data: DataConfig,
    stream: SourcesStream,
    plan: MixPlan,
    splits: dict[str, Counter[str]],
    repeated: Counter[str],
) -> dict[str, Any]:
    """The mix's figures for the books and the report, per source.

    Args:
        data: The data section (``sources`` and ``mix``).
        stream: The sources as read, with each one's books.
        plan: The mix's plan.
        splits: Samples written per split, by source name (after rendering).
        repeated: Extra copies made in the training split, by source name.
    """
    train = sum(splits.get("train", Counter()).values())
    rows = {}
    for source, read in zip(data.sources or [], stream.streams, strict=True):
        figures = plan.sources[source.name]
        in_train = splits.get("train", Counter())[source.name]
        rows[source.name] = {
            "path": source.path,
            "weight": source.weight,
            "cap": source.max_samples,
            "read": read.read,
            "quarantined": sum(read.reasons.values()),
            **dataclasses.asdict(figures),
            "repeated": repeated[source.name],
            "share": round(figures.share, 4),
            "splits": {name: counts[source.name] for name, counts in splits.items()},
            "train_share": round(in_train / train, 4) if train else 0.0,
        }
    settings: dict[str, Any] = {"strategy": data.mix.strategy}
    if data.mix.strategy == "temperature":
        settings["temperature"] = data.mix.temperature
    return {**settings, "total": plan.total, "allow_repeat": data.mix.allow_repeat, "sources": rows}
