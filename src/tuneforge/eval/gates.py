"""Regression gates: checks on the tuned model's numbers that decide whether it may ship.

A gate is ``METRIC OP VALUE``: ``exact_match >= base + 0.05``,
``retention.ppl_ratio <= 1.10``, ``safety.blocked_rate <= 0.01``. ``base`` is the
same metric for the base model of this eval; ``vs`` is the same metric for the
tuned model of a named earlier run. A gate that names a metric the eval did not
produce is a config error, never a silent pass.
"""

from __future__ import annotations

import json
import operator
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tuneforge.config.eval_schema import GATE_PATTERN, Gate, GateConfig
from tuneforge.errors import ConfigError

OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
RUN_PREFIX = "run:"


@dataclass(frozen=True)
class GateResult:
    """One gate's outcome: the value, the threshold it met or missed, and by how much."""

    gate: str
    metric: str
    value: float
    threshold: float
    passed: bool
    margin: float  # how far on the passing side (negative: short by that much)

    def describe(self) -> str:
        """One line: the gate, the numbers, and by how much it passed or failed."""
        verdict = "passed" if self.passed else "FAILED"
        how = f"by {self.margin:+.4f}" if self.passed else f"short by {-self.margin:.4f}"
        return (
            f"gate {verdict}: {self.gate}  ({self.metric} = {self.value:.4f}, "
            f"needed {self.threshold:.4f}, {how})"
        )


def check_gates(
    gates: list[Gate],
    tuned: dict[str, float],
    base: dict[str, float] | None,
    runs_dir: str | Path = "runs",
) -> list[GateResult]:
    """Evaluate every gate on the tuned model's flattened metrics.

    Args:
        gates: Gate strings, or ``GateConfig`` for gates against an earlier run.
        tuned: The tuned model's metrics, flattened (``retention.ppl_ratio``).
        base: The base model's metrics, or None when the base was not evaluated.
        runs_dir: Where ``run:NAME`` references are looked up.

    Raises:
        ConfigError: a gate names a metric the eval did not produce, or ``base``
            without a base evaluation, or an earlier run without an eval report.
    """
    results = []
    for gate in gates:
        text = gate if isinstance(gate, str) else gate.check
        match = re.match(GATE_PATTERN, text)
        if match is None:  # the schema checked it; a hand-built config may not have been
            raise ConfigError(f"eval.gates: {text!r} is not 'METRIC OP VALUE'")
        metric = match["metric"]
        value = _lookup(tuned, metric, text, "this eval")
        threshold = _threshold(match, gate, base, runs_dir, text)
        passed = bool(OPS[match["op"]](value, threshold))
        margin = threshold - value if match["op"] in ("<=", "<") else value - threshold
        if match["op"] == "==":
            margin = -abs(value - threshold)
        results.append(GateResult(text, metric, value, threshold, passed, round(margin, 6)))
    return results


def _threshold(
    match: re.Match[str], gate: Gate, base: dict[str, float] | None, runs_dir: str | Path, text: str
) -> float:
    if match["number"] is not None:
        return float(match["number"])
    if match["ref"] == "base":
        if base is None:
            raise ConfigError(
                f"eval.gates: {text!r} compares with the base, but eval.compare_base is false"
            )
        reference = _lookup(base, match["metric"], text, "the base model")
    else:
        assert isinstance(gate, GateConfig)
        reference = _lookup(earlier_metrics(gate.vs, runs_dir), match["metric"], text, gate.vs)
    offset = float(match["offset"] or 0)
    if match["sign"] == "*":
        return reference * offset
    return reference - offset if match["sign"] == "-" else reference + offset


def _lookup(values: dict[str, float], metric: str, gate: str, where: str) -> float:
    if metric not in values:
        known = ", ".join(sorted(values)) or "none"
        raise ConfigError(f"eval.gates: {gate!r}: {where} has no metric {metric!r}; known: {known}")
    return float(values[metric])


def earlier_metrics(reference: str, runs_dir: str | Path) -> dict[str, float]:
    """The tuned model's flattened metrics from an earlier run's eval report.

    ``reference`` is a run directory or ``run:NAME`` (the newest run of that name
    with a finished eval).
    """
    if reference.startswith(RUN_PREFIX):
        root = Path(runs_dir) / reference.removeprefix(RUN_PREFIX)
        finished = sorted(p.parent for p in root.glob("*/eval/_stage.json"))
        if not finished:
            raise ConfigError(f"eval.gates vs {reference!r}: no finished eval under {root}")
        report_file = finished[-1] / "report.json"
    else:
        report_file = Path(reference).expanduser() / "eval" / "report.json"
    if not report_file.is_file():
        raise ConfigError(f"eval.gates vs {reference!r}: no eval report at {report_file}")
    report = json.loads(report_file.read_text())
    return report["values"]["tuned"]


def gate_summary(results: list[GateResult]) -> dict[str, Any]:
    """JSON-ready: whether every gate passed, and each result."""
    return {"passed": all(r.passed for r in results), "results": [asdict(r) for r in results]}


def failed_gates(summary: dict[str, Any]) -> list[str]:
    """Descriptions of the failed gates in a stored eval summary (empty: all passed)."""
    gates = summary.get("gates") or {}
    return [GateResult(**r).describe() for r in gates.get("results", []) if not r["passed"]]
