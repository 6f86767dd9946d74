"""Regression gates: syntax, thresholds against numbers, the base and an earlier run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.config.eval_schema import EvalConfig, GateConfig
from tuneforge.errors import ConfigError
from tuneforge.eval.gates import check_gates, earlier_metrics, failed_gates, gate_summary

TUNED = {"exact_match": 0.62, "retention.ppl_ratio": 1.08, "safety.blocked_rate": 0.0}
BASE = {"exact_match": 0.40, "safety.blocked_rate": 0.02}


def test_number_and_base_gates_with_margins() -> None:
    results = check_gates(
        [
            "exact_match >= base + 0.05",
            "exact_match >= base * 1.6",
            "retention.ppl_ratio <= 1.10",
            "safety.blocked_rate < 0.01",
            "retention.ppl_ratio <= 1.05",
        ],
        TUNED,
        BASE,
    )
    assert [r.passed for r in results] == [True, False, True, True, False]
    assert results[0].threshold == pytest.approx(0.45)
    assert results[0].margin == pytest.approx(0.17)
    assert results[1].threshold == pytest.approx(0.64)
    assert results[1].margin == pytest.approx(-0.02)
    assert results[4].margin == pytest.approx(-0.03)
    assert "short by 0.0300" in results[4].describe()
    summary = gate_summary(results)
    assert summary["passed"] is False
    failed = failed_gates({"gates": summary})
    assert len(failed) == 2 and "exact_match >= base * 1.6" in failed[0]


def test_unknown_metric_is_a_config_error_listing_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"no metric 'exact_mach'.*exact_match"):
        check_gates(["exact_mach >= 0.5"], TUNED, BASE)


def test_base_gate_without_a_base_eval_is_an_error() -> None:
    with pytest.raises(ConfigError, match="compare_base is false"):
        check_gates(["exact_match >= base"], TUNED, None)


@pytest.mark.parametrize(
    "gate", ["exact_match", "exact_match >= ", "exact_match => 0.5", "exact_match >= best + 1"]
)
def test_malformed_gates_fail_when_the_config_loads(gate: str) -> None:
    with pytest.raises(ValueError, match="METRIC OP VALUE"):
        EvalConfig(gates=[gate])


def test_vs_needs_a_run(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="vs:"):
        EvalConfig(gates=["exact_match >= vs"])
    earlier = tmp_path / "runs" / "support" / "2026-01-02T10-00"
    (earlier / "eval").mkdir(parents=True)
    (earlier / "eval" / "_stage.json").write_text("{}")
    report = {"values": {"tuned": {"exact_match": 0.60}}}
    (earlier / "eval" / "report.json").write_text(json.dumps(report))
    gate = GateConfig(check="exact_match >= vs - 0.01", vs=str(earlier))
    (result,) = check_gates([gate], TUNED, BASE)
    assert result.passed and result.threshold == pytest.approx(0.59)
    by_name = GateConfig(check="exact_match >= vs + 0.05", vs="run:support")
    (result,) = check_gates([by_name], TUNED, BASE, runs_dir=tmp_path / "runs")
    assert not result.passed and result.threshold == pytest.approx(0.65)
    assert earlier_metrics("run:support", tmp_path / "runs") == {"exact_match": 0.60}
    with pytest.raises(ConfigError, match="no finished eval"):
        earlier_metrics("run:other", tmp_path / "runs")
