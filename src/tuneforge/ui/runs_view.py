"""What the Runs tab shows: the runs table, one run's page, and a comparison of runs.

Everything here is a pure function of the run directories (read through
:mod:`tuneforge.runs.catalog`), so the pages show exactly what ``tuneforge runs``
prints, and the tests can check the tables without a browser.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from tuneforge.runs.catalog import RunInfo, find_runs, resolve_run, run_row
from tuneforge.runs.compare import ABSENT, best_index, config_diff, loss_curves, metric_rows
from tuneforge.runs.lineage import LINEAGE_FILE

GATE_FILTERS = ("any", "passed", "failed", "none")
RUN_COLUMNS = ("run", "created", "method", "stages", "key metrics", "gates")
EVAL_COLUMNS = ("metric", "base", "tuned", "delta", "95% interval")
GATE_COLUMNS = ("gate", "value", "threshold", "margin", "passed")


def runs_table(root: Path, name: str = "", method: str = "", gates: str = "any") -> pd.DataFrame:
    """Every run under ``root``, newest first, narrowed by the filters.

    Args:
        root: The runs directory.
        name: Keep runs whose ``name/stamp`` contains this text.
        method: Keep runs whose method (``lora sft``) contains this text.
        gates: ``any``, ``passed``, ``failed`` (failed or overridden) or ``none``.
    """
    rows = []
    for run in find_runs(root) if root.is_dir() else []:
        row = run_row(run)
        if name and name.lower() not in row["run"].lower():
            continue
        if method and method.lower() not in row["method"].lower():
            continue
        if not _gate_matches(row["gates"], gates):
            continue
        rows.append(
            {
                "run": row["run"],
                "created": (row["created"] or "")[:19].replace("T", " "),
                "method": row["method"],
                "stages": " ".join(
                    s + ("*" if v == "reused" else "") for s, v in row["stages"].items()
                ),
                "key metrics": ", ".join(f"{k} {_short(v)}" for k, v in row["metrics"].items()),
                "gates": row["gates"],
            }
        )
    return pd.DataFrame(rows, columns=list(RUN_COLUMNS))


def _gate_matches(state: str, wanted: str) -> bool:
    if wanted == "any":
        return True
    if wanted == "failed":
        return state.startswith(("FAILED", "overridden"))
    return state == wanted


def run_overview(run: RunInfo) -> str:
    """Markdown: what the run is, its stages, and its training summary."""
    config, train = run.config, run.summary("train")
    lines = [
        f"### {run.label}",
        f"- **model**: `{(config.get('model') or {}).get('name_or_path', '?')}`, "
        f"**method**: {run_row(run)['method']}, **seed**: {config.get('seed', '?')}",
        f"- **stages**: {', '.join(f'{s} ({v})' for s, v in run_row(run)['stages'].items())}",
        f"- **folder**: `{run.path}`",
    ]
    if train:
        lines.append(
            f"- **training**: {train.get('steps')} steps; val loss "
            f"{_short(train.get('val_loss_before'))} -> {_short(train.get('val_loss_after'))}"
        )
    return "\n".join(lines)


def train_curves(run: RunInfo) -> pd.DataFrame:
    """Long-form ``step, value, series`` rows: train loss, val loss and learning rate."""
    records = run.train_records()
    rows = [
        {"step": step, "value": value, "series": name}
        for name, points in loss_curves(records).items()
        for step, value in points
    ]
    rows += [
        {"step": r["step"], "value": r["lr"], "series": "lr"}
        for r in records
        if isinstance(r.get("lr"), int | float) and isinstance(r.get("step"), int)
    ]
    return pd.DataFrame(rows, columns=["step", "value", "series"])


def curves_figure(curves: dict[str, pd.DataFrame]) -> Any:
    """Loss (solid train, dashed validation) and learning rate, one colour per run."""
    from tuneforge.eval.plots import plt

    figure, (loss_axis, lr_axis) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (label, frame) in enumerate(curves.items()):
        colour = colours[index % len(colours)]
        for series, axis, style in (
            ("loss", loss_axis, "-"),
            ("val_loss", loss_axis, "--o"),
            ("lr", lr_axis, "-"),
        ):
            part = frame[frame["series"] == series]
            if not part.empty:
                axis.plot(
                    part["step"], part["value"], style, color=colour, label=f"{label} {series}"
                )
    loss_axis.set(title="loss", xlabel="step")
    lr_axis.set(title="learning rate", xlabel="step")
    for axis in (loss_axis, lr_axis):
        if axis.lines:
            axis.legend(fontsize=7)
    figure.tight_layout()
    return figure


def eval_table(run: RunInfo) -> pd.DataFrame:
    """Each metric: base, tuned, the difference and its 95% interval."""
    report = _eval_report(run)
    rows = []
    for metric, found in (report.get("comparison") or {}).items():
        if not isinstance(found, dict) or "tuned" not in found:
            continue
        interval = ""
        if found.get("low") is not None:
            interval = f"[{_short(found['low'])}, {_short(found['high'])}]"
        rows.append(
            {
                "metric": metric,
                "base": found.get("base"),
                "tuned": found.get("tuned"),
                "delta": found.get("delta"),
                "95% interval": interval,
            }
        )
    if not rows:  # no base comparison: the tuned values alone
        for metric, value in (report.get("values") or {}).get("tuned", {}).items():
            rows.append({"metric": metric, "base": None, "tuned": value, "delta": None})
    return pd.DataFrame(rows, columns=list(EVAL_COLUMNS))


def gates_table(run: RunInfo) -> pd.DataFrame:
    """Each regression gate: its check, the value, the threshold and whether it passed."""
    results = (_eval_report(run).get("gates") or {}).get("results", [])
    rows = [
        {
            "gate": r.get("gate"),
            "value": r.get("value"),
            "threshold": r.get("threshold"),
            "margin": r.get("margin"),
            "passed": "yes" if r.get("passed") else "NO",
        }
        for r in results
    ]
    return pd.DataFrame(rows, columns=list(GATE_COLUMNS))


def data_report(run: RunInfo) -> tuple[str, Path | None]:
    """The data stage's report (markdown) and its token-length plot, when it ran."""
    folder = run.path / "data"
    report = folder / "report.md"
    text = report.read_text(encoding="utf-8") if report.is_file() else "_no data stage_"
    plot = folder / "token_lengths.png"
    return text, plot if plot.is_file() else None


def lineage(run: RunInfo) -> dict[str, Any]:
    """Each export's ``lineage.json`` by export folder name (empty without an export)."""
    export = run.path / "export"
    found = {}
    for file in sorted(export.glob(f"*/{LINEAGE_FILE}")) + sorted(export.glob(LINEAGE_FILE)):
        try:
            found[str(file.parent.relative_to(export)) or "."] = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as err:
            found[str(file.parent.relative_to(export))] = {"error": str(err)}
    return found


def compare_runs(root: Path, labels: list[str]) -> tuple[Any, pd.DataFrame, pd.DataFrame]:
    """Overlaid curves, the config keys that differ, and the numbers side by side.

    In the metrics table the best run of each metric with a direction is marked ``*``.

    Raises:
        ConfigError: a label names no run.
    """
    runs = [resolve_run(label, root) for label in labels]
    figure = curves_figure({run.label: train_curves(run) for run in runs})
    diff = config_diff([run.config for run in runs])
    diff_rows = [{"key": key, **_by_run(runs, values)} for key, values in diff.items()]
    metric_table = []
    for metric, values in metric_rows(runs).items():
        best = best_index(metric, values)
        shown = [_short(v) + ("*" if i == best else "") for i, v in enumerate(values)]
        metric_table.append({"metric": metric, **_by_run(runs, shown)})
    columns = [run.label for run in runs]
    return (
        figure,
        pd.DataFrame(diff_rows, columns=["key", *columns]),
        pd.DataFrame(metric_table, columns=["metric", *columns]),
    )


def _by_run(runs: list[RunInfo], values: list[Any]) -> dict[str, str]:
    return {run.label: _cell(value) for run, value in zip(runs, values, strict=True)}


def _cell(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value)
    return "(absent)" if value is ABSENT else str(value)


def _eval_report(run: RunInfo) -> dict[str, Any]:
    file = run.path / "eval" / "report.json"
    if file.is_file():
        return json.loads(file.read_text(encoding="utf-8"))
    return run.summary("eval")


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)
