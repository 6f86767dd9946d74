"""Paired bootstrap: coverage on synthetic data, paths that agree, and the degenerate cases."""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest
import sacrebleu

from tuneforge.eval.metrics import METRICS, MetricContext, compute
from tuneforge.eval.stats import (
    Interval,
    bootstrap_mean,
    bootstrap_mean_delta,
    bootstrap_metric_delta,
    paired_bootstrap,
)

# Joint law of (tuned correct, base correct): P(tuned)=0.6, P(base)=0.5, positively correlated.
JOINT = {(1, 1): 0.45, (1, 0): 0.15, (0, 1): 0.05, (0, 0): 0.35}
TRUE_DELTA = 0.1
WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "quick", "brown", "fox", "jumps"]


def paired_bernoulli(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    outcomes = list(JOINT)
    drawn = rng.choice(len(outcomes), size=n, p=list(JOINT.values()))
    pairs = np.array(outcomes, dtype=float)[drawn]
    return pairs[:, 0], pairs[:, 1]


def sentences(rng: np.random.Generator, n: int, length: int = 12) -> list[str]:
    return [" ".join(rng.choice(WORDS, size=length)) for _ in range(n)]


def corpus_set(n: int = 40) -> tuple[list[str], list[str], list[str]]:
    """References, a tuned output closer to them than the base output."""
    rng = np.random.default_rng(7)
    refs = sentences(rng, n)
    noise = sentences(rng, n)
    tuned = [" ".join(r.split()[:8] + x.split()[8:]) for r, x in zip(refs, noise, strict=True)]
    base = [" ".join(r.split()[:4] + x.split()[4:]) for r, x in zip(refs, noise, strict=True)]
    return refs, tuned, base


@pytest.mark.parametrize(("confidence", "low", "high"), [(0.95, 0.90, 0.99), (0.90, 0.84, 0.95)])
def test_interval_covers_the_true_delta_at_the_nominal_rate(
    confidence: float, low: float, high: float
) -> None:
    rng = np.random.default_rng(123)
    covered, widths = 0, []
    for rep in range(200):
        tuned, base = paired_bernoulli(rng, 200)
        interval = bootstrap_mean_delta(tuned, base, samples=500, confidence=confidence, seed=rep)
        covered += interval.low <= TRUE_DELTA <= interval.high
        widths.append(interval.high - interval.low)
    assert low <= covered / 200 <= high
    # Pairing matters: the width follows sd(tuned - base) = sqrt(0.19), not the
    # independent-samples sd sqrt(0.24 + 0.25) (which is 60% wider).
    z = {0.95: 1.96, 0.90: 1.645}[confidence]
    expected_width = 2 * z * math.sqrt(0.19 / 200)
    assert np.mean(widths) == pytest.approx(expected_width, rel=0.08)


def test_generic_path_equals_the_vectorised_path_for_a_mean() -> None:
    tuned, base = paired_bernoulli(np.random.default_rng(0), 150)

    def means(indices: np.ndarray) -> tuple[float, float]:
        return float(tuned[indices].mean()), float(base[indices].mean())

    generic = paired_bootstrap(means, n=150, samples=300, confidence=0.9, seed=5)
    fast = bootstrap_mean_delta(tuned, base, samples=300, confidence=0.9, seed=5)
    assert generic.delta == pytest.approx(tuned.mean() - base.mean(), abs=1e-12)
    for got, want in zip(dataclasses.astuple(generic), dataclasses.astuple(fast), strict=True):
        assert got == pytest.approx(want, abs=1e-12)


def test_not_applicable_values_are_left_out_pairwise() -> None:
    interval = bootstrap_mean_delta([1, None, 0, 1, 1], [0, 1, None, 1, math.nan], samples=200)
    assert interval.delta == pytest.approx((1 + 1) / 2 - (0 + 1) / 2)  # indices 0 and 3
    assert interval.low == pytest.approx(0.0) and interval.high == pytest.approx(1.0)
    assert math.isnan(bootstrap_mean_delta([None], [1.0]).delta)


@pytest.mark.parametrize("name", ["bleu", "chrf", "macro_f1", "rouge_l"])
def test_corpus_interval_brackets_the_full_set_delta(name: str) -> None:
    refs, tuned, base = corpus_set()
    if name == "macro_f1":
        refs = [r.split()[0] for r in refs]  # one-word labels
    ctx = MetricContext()
    interval = bootstrap_metric_delta(METRICS[name], tuned, base, refs, ctx, samples=300)
    full = compute([name], tuned, refs, ctx)[name] - compute([name], base, refs, ctx)[name]
    assert interval.delta == pytest.approx(full, abs=1e-3)
    assert interval.low < interval.delta < interval.high
    if name != "macro_f1":  # the tuned output is clearly better on the overlap metrics
        assert interval.low > 0


@pytest.mark.parametrize("name", ["bleu", "chrf"])
def test_summed_statistics_equal_recomputing_sacrebleu(name: str) -> None:
    refs, tuned, base = corpus_set(20)
    corpus = {"bleu": sacrebleu.corpus_bleu, "chrf": sacrebleu.corpus_chrf}[name]

    def recomputed(indices: np.ndarray) -> tuple[float, float]:
        sub_refs = [[refs[i] for i in indices]]
        return (
            corpus([tuned[i] for i in indices], sub_refs).score,
            corpus([base[i] for i in indices], sub_refs).score,
        )

    slow = paired_bootstrap(recomputed, n=20, samples=25, seed=3)
    ctx = MetricContext()
    fast = bootstrap_metric_delta(METRICS[name], tuned, base, refs, ctx, samples=25, seed=3)
    for got, want in zip(dataclasses.astuple(fast), dataclasses.astuple(slow), strict=True):
        assert got == pytest.approx(want, abs=1e-9)


def test_metric_without_statistics_is_recomputed_with_paired_context() -> None:
    call = {"name": "f", "arguments": {"x": 1}}
    calls = [[call], None, [call], [call]] * 5
    tuned = ['{"name": "f", "arguments": {"x": 1}}'] * 20
    base = ['{"name": "f", "arguments": {"x": 2}}', "", '{"name": "f", "arguments": {"x": 1}}', ""]
    ctx = MetricContext(reference_calls=calls)
    mean_metric = METRICS["tool_call_accuracy"]
    corpus_only = dataclasses.replace(mean_metric, per_example=None)
    refs = [""] * 20
    slow = bootstrap_metric_delta(corpus_only, tuned, base * 5, refs, ctx, samples=200)
    fast = bootstrap_metric_delta(mean_metric, tuned, base * 5, refs, ctx, samples=200)
    assert slow.delta == pytest.approx(1 - 1 / 3) and fast.delta == pytest.approx(1 - 1 / 3)
    # Resampling all 20 examples (slow) or the 15 applicable ones (fast): close, not equal.
    assert slow.low == pytest.approx(fast.low, abs=0.1) and slow.low > 0.3
    assert slow.high == pytest.approx(fast.high, abs=0.05) and slow.high < 1


@pytest.mark.parametrize("name", ["bleu", "chrf", "macro_f1", "exact_match", "rouge_l"])
def test_identical_outputs_give_a_zero_interval(name: str) -> None:
    refs, tuned, _ = corpus_set(15)
    interval = bootstrap_metric_delta(METRICS[name], tuned, tuned, refs, MetricContext())
    assert interval == Interval(0.0, 0.0, 0.0, 0.95)


def test_the_seed_fixes_the_interval() -> None:
    tuned, base = paired_bernoulli(np.random.default_rng(1), 100)
    first = bootstrap_mean_delta(tuned, base, seed=4)
    assert bootstrap_mean_delta(tuned, base, seed=4) == first
    assert bootstrap_mean_delta(tuned, base, seed=5) != first


def test_bootstrap_mean_of_one_model() -> None:
    values = np.random.default_rng(2).normal(3.0, 1.0, size=400)
    interval = bootstrap_mean([*values, None], confidence=0.9)
    assert interval.delta == pytest.approx(values.mean())
    # 90% half-width of a mean of 400 unit-variance draws: 1.645 / 20.
    assert (interval.high - interval.low) / 2 == pytest.approx(1.645 / 20, rel=0.15)
    assert interval.low < 3.0 < interval.high


def test_corpus_bootstrap_is_cheap() -> None:
    rng = np.random.default_rng(0)
    refs, tuned, base = sentences(rng, 100, 20), sentences(rng, 100, 20), sentences(rng, 100, 20)
    start = time.perf_counter()
    bootstrap_metric_delta(METRICS["bleu"], tuned, base, refs, MetricContext(), samples=1000)
    assert time.perf_counter() - start < 5.0


def test_bad_arguments_are_errors_and_empty_sets_are_nan() -> None:
    with pytest.raises(ValueError, match="samples must be at least 1"):
        bootstrap_mean_delta([1.0], [0.0], samples=0)
    with pytest.raises(ValueError, match="confidence must be between 0 and 1"):
        bootstrap_mean([1.0], confidence=1.5)
    with pytest.raises(ValueError, match="2 tuned values for 1 base"):
        bootstrap_mean_delta([1.0, 0.0], [0.0])
    with pytest.raises(ValueError, match="1 tuned and 2 base predictions"):
        bootstrap_metric_delta(METRICS["bleu"], ["a"], ["a", "b"], ["a"], MetricContext())
    empty = bootstrap_metric_delta(METRICS["bleu"], [], [], [], MetricContext())
    assert all(math.isnan(v) for v in (empty.delta, empty.low, empty.high))
