"""Plots of the eval report: base vs tuned with intervals, and the suites at a glance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt

COLOURS = {"base": "#9aa5b1", "tuned": "#2f6fdf"}
UNIT_SCALE = {
    "bleu",
    "chrf",
    "length_words",
    "length_ratio",
    "loss",
    "perplexity",
    "text_loss",
    "text_perplexity",
}


def plot_metrics(report: dict[str, Any], out_dir: Path) -> Path | None:
    """Bar chart of the [0, 1] task metrics per model, with the change's interval as error bars."""
    metrics = report.get("metrics", {})
    if "tuned" not in metrics:
        return None
    names = [n for n in metrics["tuned"] if n not in UNIT_SCALE]
    if not names:
        return None
    comparison = report.get("comparison", {})
    figure, axis = plt.subplots(figsize=(max(5, 1.1 * len(names) + 2), 3.6), dpi=110)
    width = 0.38
    for offset, model in enumerate(m for m in ("base", "tuned") if m in metrics):
        xs = [i + (offset - 0.5) * width for i in range(len(names))]
        heights = [metrics[model][n] for n in names]
        errors = None
        if model == "tuned" and comparison and all(n in comparison for n in names):
            # the interval of the change, drawn around the tuned value
            errors = [
                [max(0.0, comparison[n]["delta"] - comparison[n]["low"]) for n in names],
                [max(0.0, comparison[n]["high"] - comparison[n]["delta"]) for n in names],
            ]
        axis.bar(xs, heights, width, label=model, color=COLOURS[model], yerr=errors, capsize=3)
    axis.set_xticks(range(len(names)), names, rotation=30, ha="right")
    axis.set_ylim(0, 1.05)
    axis.set_title("Task metrics: base vs tuned (bars: change interval)")
    axis.legend()
    return _save(figure, out_dir / "metrics.png")


def plot_suites(report: dict[str, Any], out_dir: Path) -> Path | None:
    """Retention perplexity per source, and safety/bias/grounding rates, base vs tuned."""
    panels = []
    if "retention" in report and "base" in report["retention"]:
        ppl = {
            m: {s: v["ppl"] for s, v in report["retention"][m]["perplexity"].items()}
            for m in ("base", "tuned")
        }
        panels.append(("Retention: perplexity (lower is better)", ppl))
    rates: dict[str, dict[str, float]] = {}
    for suite, key in (
        ("safety", "refusal_rate"),
        ("safety", "blocked_rate"),
        ("grounding", "flagged_rate"),
        ("bias", "divergence"),
    ):
        for model, found in report.get(suite, {}).items():
            if model in COLOURS and key in found:
                rates.setdefault(model, {})[f"{suite}.{key}"] = found[key]
    if rates:
        panels.append(("Safety, grounding and bias rates", rates))
    if not panels:
        return None
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 3.6), dpi=110)
    axes = [axes] if len(panels) == 1 else list(axes)
    for axis, (title, values) in zip(axes, panels, strict=True):
        labels = list(next(iter(values.values())))
        for offset, model in enumerate(m for m in ("base", "tuned") if m in values):
            xs = [i + (offset - 0.5) * 0.38 for i in range(len(labels))]
            heights = [values[model].get(label, 0) for label in labels]
            axis.bar(xs, heights, 0.38, label=model, color=COLOURS[model])
        axis.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
        axis.set_title(title)
        axis.legend()
    return _save(figure, out_dir / "suites.png")


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
