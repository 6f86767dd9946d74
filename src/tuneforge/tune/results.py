"""What a search leaves in its study folder, whichever backend ran it.

``best_config.yaml`` (the base config with the best values: `tuneforge run` takes
it as it is), ``trials.csv`` and ``trials.md`` (every trial: state, values,
validation loss, seconds, run directory) and ``importance.png`` (how much each
searched key mattered, by Optuna's PED-ANOVA, once two trials have completed).
"""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from tuneforge.config import Config, dump_config
from tuneforge.console import out, say
from tuneforge.tune.space import distributions, trial_config

COLUMNS = ("number", "state", "val_loss", "seconds", "params", "run_dir", "note")


@dataclass
class TrialRecord:
    """One trial as the results show it (COMPLETE, PRUNED, FAIL, INTERRUPTED, RUNNING, WAITING)."""

    number: int
    state: str
    params: dict[str, Any]
    val_loss: float | None = None
    seconds: float | None = None
    run_dir: str = ""
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def best_trial(records: list[TrialRecord]) -> TrialRecord | None:
    """The completed trial with the lowest validation loss (the earliest on a tie)."""
    done = [r for r in records if r.state == "COMPLETE" and r.val_loss is not None]
    return min(done, key=lambda r: (r.val_loss, r.number)) if done else None


def write_results(
    folder: Path, records: list[TrialRecord], base: Config, study: str
) -> Path | None:
    """Write the trials table, the best config and the importance plot into ``folder``.

    Returns:
        The best config file, or None when no trial completed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    write_trials_csv(folder / "trials.csv", records)
    (folder / "trials.md").write_text(trials_markdown(records, study), encoding="utf-8")
    best = best_trial(records)
    if best is None:
        return None
    header = (
        f"# Best of study {study}: trial {best.number}, validation loss {best.val_loss:.5g}\n"
        f"# (tuneforge tune; run directory {best.run_dir})\n"
    )
    path = folder / "best_config.yaml"
    path.write_text(header + dump_config(trial_config(base, best.params)), encoding="utf-8")
    plot_importance(folder / "importance.png", records, base.tune.space)
    return path


def write_trials_csv(path: Path, records: list[TrialRecord]) -> None:
    """One row per trial; each searched key is its own column."""
    keys = sorted({key for r in records for key in r.params})
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["number", "state", "val_loss", "seconds", *keys, "run_dir", "note"])
        for r in sorted(records, key=lambda r: r.number):
            values = [r.params.get(key, "") for key in keys]
            writer.writerow(
                [r.number, r.state, _num(r.val_loss), _num(r.seconds), *values, r.run_dir, r.note]
            )


def trials_markdown(records: list[TrialRecord], study: str) -> str:
    """The trials as a Markdown table, best first, with the median completed loss."""
    keys = sorted({key for r in records for key in r.params})
    lines = [
        f"# Study {study}\n",
        _summary_line(records) + "\n",
        "| trial | state | val loss | seconds | " + " | ".join(keys) + " | run | note |",
        "|" + "---|" * (len(keys) + 6),
    ]
    for r in _ranked(records):
        cells = [str(r.number), r.state, _num(r.val_loss), _num(r.seconds)]
        cells += [_show(r.params.get(key, "")) for key in keys]
        cells += [f"`{Path(r.run_dir).name}`" if r.run_dir else "", r.note]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def print_results(records: list[TrialRecord], folder: Path) -> None:
    """A rich table of the trials (best first), then the best values and the files."""
    keys = sorted({key for r in records for key in r.params})
    out.print(f"[bold]{_summary_line(records)}[/bold]")
    table = Table()
    for column in ("trial", "state", "val loss", "seconds", *keys, "note"):
        table.add_column(column, justify="left" if column in ("state", "note") else "right")
    for r in _ranked(records):
        values = [_show(r.params.get(key, "")) for key in keys]
        table.add_row(str(r.number), r.state, _num(r.val_loss), _num(r.seconds), *values, r.note)
    out.print(table)
    best = best_trial(records)
    if best is not None:
        shown = ", ".join(f"{key}={_show(value)}" for key, value in sorted(best.params.items()))
        out.print(f"best: trial {best.number}, val loss {best.val_loss:.5g}: {shown}")
        out.print(f"best config: {folder / 'best_config.yaml'}\nrun: {best.run_dir}")
    out.print(f"trials: {folder / 'trials.csv'}")


def plot_importance(path: Path, records: list[TrialRecord], space: dict[str, Any]) -> bool:
    """Bar chart of parameter importances; False (and a note) when it cannot be computed."""
    import optuna

    done = [r for r in records if r.state == "COMPLETE" and r.val_loss is not None]
    if len(done) < 2 or len({r.val_loss for r in done}) < 2:
        say("importance: needs two completed trials with different losses; no importance.png")
        path.unlink(missing_ok=True)
        return False
    dists = distributions(space)
    study = optuna.create_study(direction="minimize")
    for r in done:
        params = {key: value for key, value in r.params.items() if key in dists}
        used = {key: dists[key] for key in params}
        study.add_trial(optuna.create_trial(params=params, distributions=used, value=r.val_loss))
    evaluator = optuna.importance.PedAnovaImportanceEvaluator()  # needs no scikit-learn
    importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
    _bar_chart(path, importances, len(done))
    return True


def _bar_chart(path: Path, importances: dict[str, float], trials: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(6, 1.2 + 0.45 * len(names)))
    ax.barh(names, [importances[name] for name in names], color="#4c72b0")
    ax.set_xlabel("importance for validation loss (PED-ANOVA, sums to 1)")
    ax.set_title(f"Parameter importance over {trials} completed trials")
    ax.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _summary_line(records: list[TrialRecord]) -> str:
    counts: dict[str, int] = {}
    for r in records:
        counts[r.state] = counts.get(r.state, 0) + 1
    states = ", ".join(f"{n} {state.lower()}" for state, n in sorted(counts.items()))
    losses = [r.val_loss for r in records if r.state == "COMPLETE" and r.val_loss is not None]
    median = f"; median val loss {statistics.median(losses):.5g}" if losses else ""
    return f"{len(records)} trials ({states}){median}"


def _ranked(records: list[TrialRecord]) -> list[TrialRecord]:
    order = {"COMPLETE": 0, "PRUNED": 1}
    return sorted(
        records,
        key=lambda r: (order.get(r.state, 2), math.inf if r.val_loss is None else r.val_loss),
    )


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.5g}"


def _show(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
