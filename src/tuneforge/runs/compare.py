"""Comparing runs: what differs in their configs, their numbers, and their loss curves."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tuneforge.runs.catalog import RunInfo, eval_values

ABSENT = object()  # a key one config has and another lacks
TRAIN_NUMBERS = ("steps", "train_loss_last", "val_loss_before", "val_loss_after", "best_val_loss")
LOWER_IS_BETTER = ("loss", "perplexity", "ppl", "blocked_rate", "flagged_rate", "divergence")
NO_BETTER = ("steps", "length_words", "length_ratio", "refusal_rate")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys; lists and scalars are leaves.

    >>> flatten({"train": {"lr": 1e-4, "schedule": "cosine"}, "seed": 1})
    {'train.lr': 0.0001, 'train.schedule': 'cosine', 'seed': 1}
    """
    if not isinstance(value, dict) or (prefix and not value):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, inner in value.items():
        flat.update(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def config_diff(configs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The dotted keys whose values are not the same in every config, with each one's value.

    A key that a config lacks (an older schema) has the value ``ABSENT`` there.
    """
    flats = [flatten(config) for config in configs]
    keys = list(dict.fromkeys(key for flat in flats for key in flat))
    diff = {}
    for key in keys:
        values = [flat.get(key, ABSENT) for flat in flats]
        if any(v != values[0] for v in values[1:]):  # ABSENT equals only itself
            diff[key] = values
    return diff


def metric_rows(runs: list[RunInfo]) -> dict[str, list[float | None]]:
    """Training summary numbers (``train.*``) and the tuned model's eval values (``eval.*``).

    One list per metric, one value per run (None where a run lacks it).
    """
    rows: dict[str, list[float | None]] = {}
    summaries = [run.summary("train") for run in runs]
    extra = [k for s in summaries for k in s if k.startswith("val_") and k not in TRAIN_NUMBERS]
    for key in dict.fromkeys([*TRAIN_NUMBERS, *extra]):
        values = [_number(s.get(key)) for s in summaries]
        if any(v is not None for v in values):
            rows[f"train.{key}"] = values
    tuned = [eval_values(run).get("tuned", {}) for run in runs]
    for key in dict.fromkeys(k for values in tuned for k in values):
        rows[f"eval.{key}"] = [_number(values.get(key)) for values in tuned]
    return rows


def direction(metric: str) -> int:
    """+1 when higher is better, -1 when lower is, 0 when neither (lengths, counts)."""
    name = metric.rsplit(".", 1)[-1]
    if name in NO_BETTER or name.endswith(("_before", "_tokens", "_step")):
        return 0
    return -1 if any(word in metric for word in LOWER_IS_BETTER) else 1


def best_index(metric: str, values: list[float | None]) -> int | None:
    """Which run is best on ``metric``; None for ties, a single run, or no direction."""
    sign = direction(metric)
    present = [(v, i) for i, v in enumerate(values) if v is not None]
    if sign == 0 or len(present) < 2 or len({v for v, _ in present}) == 1:
        return None
    best = max(present, key=lambda pair: sign * pair[0])
    return best[1]


def loss_curves(records: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """``loss`` and ``val_loss`` per step from a run's training lines (last value of a step)."""
    curves: dict[str, dict[int, float]] = {"loss": {}, "val_loss": {}}
    for record in records:
        for name, points in curves.items():
            value = _number(record.get(name))
            if value is not None and isinstance(record.get("step"), int):
                points[record["step"]] = value
    return {name: sorted(points.items()) for name, points in curves.items() if points}


def plot_loss_curves(curves: dict[str, dict[str, list[tuple[int, float]]]], path: Path) -> Path:
    """Overlay each run's training loss (line) and validation loss (dashed, dots) in one PNG.

    Args:
        curves: Per run label, its :func:`loss_curves`.
        path: The PNG to write (its folder is made).
    """
    from tuneforge.eval.plots import _save, plt  # the project's one PNG saver (Agg)

    figure, axis = plt.subplots(figsize=(7.5, 4.2), dpi=110)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (label, found) in enumerate(curves.items()):
        colour = colours[index % len(colours)]
        for name, style in (("loss", "-"), ("val_loss", "--")):
            if name in found:
                steps, values = zip(*found[name], strict=True)
                marker = "o" if name == "val_loss" else None
                axis.plot(
                    steps, values, style, color=colour, marker=marker, label=f"{label} {name}"
                )
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.set_title("Training loss (solid) and validation loss (dashed)")
    if curves and any(curves.values()):
        axis.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(figure, path)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) else value
