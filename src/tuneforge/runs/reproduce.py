"""Checking a re-run against the original: every training step, the summaries, weights, eval.

On one machine with the same package versions, the same config and seed give
bitwise the same numbers on CPU; :func:`reproduction_checks` lists each number
of both runs side by side so the first one that differs can be named. Timings
(seconds, tokens per second, wall-clock times) are left out: they never repeat.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.errors import TuneforgeError
from tuneforge.runs.catalog import RunInfo, eval_values
from tuneforge.runs.hashing import file_sha256

NOT_NUMBERS = frozenset({"time", "stage", "step", "seconds", "output", "device", "precision"})
WEIGHT_FILES = ("*.safetensors", "*.bin")


class NotReproduced(TuneforgeError):
    """The re-run's numbers differ from the original's (exit 1)."""

    exit_code = 1


@dataclass(frozen=True)
class Check:
    """One number (or weight digest) of the original run and of the re-run."""

    metric: str
    original: Any
    reproduced: Any
    step: int | None = None

    @property
    def label(self) -> str:
        return self.metric if self.step is None else f"{self.metric} at step {self.step}"

    @property
    def identical(self) -> bool:
        """Equal to the last bit (NaN counts as equal to NaN)."""
        a, b = self.original, self.reproduced
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return True
        return type(a) is type(b) and a == b

    @property
    def difference(self) -> float | None:
        """``reproduced - original`` for two numbers; None otherwise."""
        if _is_number(self.original) and _is_number(self.reproduced):
            return self.reproduced - self.original
        return None

    def passes(self, tolerance: float) -> bool:
        """Identical, or (with a tolerance) numbers at most ``tolerance`` apart.

        With a tolerance, weight digests are shown but do not decide: weights that
        differ in the last bits are what a tolerance is for.
        """
        if self.identical:
            return True
        if tolerance <= 0:
            return False
        if self.difference is not None:
            return abs(self.difference) <= tolerance
        return isinstance(self.original, str) and isinstance(self.reproduced, str)


@dataclass(frozen=True)
class Row:
    """A line of the comparison table: one check, or one metric over every step."""

    metric: str
    original: Any
    reproduced: Any
    difference: float | None
    identical: bool


def reproduction_checks(original: RunInfo, again: RunInfo) -> list[Check]:
    """Every comparable number of two runs, in pipeline order.

    Per-step training values from metrics.jsonl, the training summary, each
    model's eval values, and digests of the prepared data files, the trained
    weights and the eval's replies.
    """
    checks = _step_checks(original.train_records(), again.train_records())
    checks += _mapping_checks("train", original.summary("train"), again.summary("train"))
    first, second = eval_values(original), eval_values(again)
    for model in dict.fromkeys([*first, *second]):
        checks += _mapping_checks(f"eval.{model}", first.get(model, {}), second.get(model, {}))
    digests = [_digests(original), _digests(again)]
    for name in digests[0]:
        if digests[0][name] is not None or digests[1][name] is not None:
            checks.append(Check(name, digests[0][name], digests[1][name]))
    return checks


def first_failure(checks: list[Check], tolerance: float = 0.0) -> Check | None:
    """The first check that is neither identical nor within ``tolerance``."""
    return next((check for check in checks if not check.passes(tolerance)), None)


def verdict(checks: list[Check], tolerance: float, original: str, again: str) -> str:
    """One line saying the run was reproduced (bitwise, or within ``tolerance``).

    Raises:
        NotReproduced: naming the first number that differs, with both values.
    """
    failure = first_failure(checks, tolerance)
    if failure is not None:
        beyond = f" (more than --tolerance {tolerance:g})" if tolerance else ""
        raise NotReproduced(
            f"not reproduced: {failure.label} is {failure.original!r} in {original} but "
            f"{failure.reproduced!r} in {again}{beyond}"
        )
    identical = sum(check.identical for check in checks)
    if identical == len(checks):
        return f"reproduced: all {len(checks)} numbers identical (bitwise) in {again}"
    largest = max((abs(c.difference) for c in checks if c.difference is not None), default=0)
    return (
        f"reproduced within --tolerance {tolerance:g}: {identical} of {len(checks)} numbers "
        f"identical, largest difference {largest:.3g}, in {again}"
    )


def table_rows(checks: list[Check]) -> list[Row]:
    """Checks for a table: per-step values become one row per metric (last values, max diff)."""
    rows: list[Row] = []
    series: dict[str, list[Check]] = {}
    for check in checks:
        if check.step is None:
            rows.append(
                Row(
                    check.metric,
                    check.original,
                    check.reproduced,
                    check.difference,
                    check.identical,
                )
            )
        else:
            series.setdefault(check.metric, []).append(check)
    grouped = []
    for metric, steps in series.items():
        diffs = [abs(c.difference) for c in steps if c.difference is not None]
        grouped.append(
            Row(
                f"{metric} ({len(steps)} steps, last shown)",
                steps[-1].original,
                steps[-1].reproduced,
                max(diffs) if len(diffs) == len(steps) else None,
                all(c.identical for c in steps),
            )
        )
    return grouped + rows


def environment_changes(original: dict[str, Any], again: dict[str, Any]) -> list[str]:
    """What differs between two manifests' tuneforge version, packages, hardware and git commit."""
    changes = []
    if original.get("tuneforge_version") != again.get("tuneforge_version"):
        changes.append(
            f"tuneforge {original.get('tuneforge_version')} -> {again.get('tuneforge_version')}"
        )
    for section in ("packages", "hardware"):
        first, second = original.get(section) or {}, again.get(section) or {}
        for key in dict.fromkeys([*first, *second]):
            if first.get(key) != second.get(key):
                changes.append(f"{section}.{key} {first.get(key)} -> {second.get(key)}")
    commits = [(m.get("git") or {}).get("commit") for m in (original, again)]
    if commits[0] and commits[1] and commits[0] != commits[1]:
        changes.append(f"git commit {commits[0][:12]} -> {commits[1][:12]}")
    return changes


def _step_checks(first: list[dict[str, Any]], second: list[dict[str, Any]]) -> list[Check]:
    by_step = [_per_step(records) for records in (first, second)]
    checks = []
    for step in sorted(set(by_step[0]) | set(by_step[1])):
        a, b = by_step[0].get(step, {}), by_step[1].get(step, {})
        for name in dict.fromkeys([*a, *b]):
            checks.append(Check(f"train.{name}", a.get(name), b.get(name), step))
    return checks


def _per_step(records: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Numbers logged at each step (a resumed step's later line wins)."""
    steps: dict[int, dict[str, Any]] = {}
    for record in records:
        if isinstance(record.get("step"), int):
            values = {k: v for k, v in record.items() if _compared(k, v)}
            steps.setdefault(record["step"], {}).update(values)
    return steps


def _mapping_checks(prefix: str, first: dict[str, Any], second: dict[str, Any]) -> list[Check]:
    names = [
        k for k in dict.fromkeys([*first, *second]) if _compared(k, first.get(k, second.get(k)))
    ]
    return [Check(f"{prefix}.{name}", first.get(name), second.get(name)) for name in names]


def _compared(name: str, value: Any) -> bool:
    """Numbers that a re-run must repeat: not timings, not labels."""
    timing = name in NOT_NUMBERS or name.endswith(("_per_s", "seconds", "_time"))
    return not timing and (_is_number(value) or value is None)


def _digests(run: RunInfo) -> dict[str, str | None]:
    """Short digests of the prepared data, the trained weights and the eval's replies."""
    data = run.summary("data").get("outputs") or {}  # the data stage hashed its files
    train = (run.path / "train").resolve()
    weights = sorted(p for pattern in WEIGHT_FILES for p in train.rglob(pattern))
    predictions = run.path / "eval" / "predictions.jsonl"
    return {
        "data.outputs": _short_digest(data),
        "train.weights": _short_digest({str(p.relative_to(train)): p for p in weights}),
        "eval.predictions": _short_digest({"": predictions} if predictions.is_file() else {}),
    }


def _short_digest(files: dict[str, str | Path]) -> str | None:
    """A digest over named files (a path is hashed; a string is a sha256 already); None if none."""
    if not files:
        return None
    digest = hashlib.sha256()
    for name, found in sorted(files.items()):
        sha = file_sha256(found) if isinstance(found, Path) else found
        digest.update(f"{name}:{sha}\n".encode())
    return f"sha256:{digest.hexdigest()[:16]}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
