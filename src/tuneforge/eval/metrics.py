"""Task metrics over (prediction, reference) pairs; each returns a mean in [0, 1]."""

from __future__ import annotations

from collections.abc import Callable

from rouge_score import rouge_scorer


def exact_match(predictions: list[str], references: list[str]) -> float:
    """Share of predictions equal to their reference after trimming whitespace."""
    pairs = list(zip(predictions, references, strict=True))
    return sum(p.strip() == r.strip() for p, r in pairs) / max(len(pairs), 1)


def rouge_l(predictions: list[str], references: list[str]) -> float:
    """Mean ROUGE-L F1 (longest common subsequence of words)."""
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    pairs = list(zip(predictions, references, strict=True))
    scores = [scorer.score(r, p)["rougeL"].fmeasure for p, r in pairs]
    return sum(scores) / max(len(scores), 1)


METRICS: dict[str, Callable[[list[str], list[str]], float]] = {
    "exact_match": exact_match,
    "rouge_l": rouge_l,
}


def score(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Every metric in :data:`METRICS`, rounded for reports."""
    return {name: round(fn(predictions, references), 4) for name, fn in METRICS.items()}
