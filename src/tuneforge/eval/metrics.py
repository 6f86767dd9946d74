"""Task metrics over (prediction, reference) pairs, and the registry the eval stage reads.

Most metrics are means of a per-example value (exact match, ROUGE, JSON validity,
tool calls, lengths, refusals); a ``None`` per-example value means "not applicable"
and is left out of the mean. BLEU, chrF and macro-F1 are corpus-level: they are
computed from per-example *sufficient statistics* summed over the set, which is
what lets :mod:`tuneforge.eval.stats` bootstrap them cheaply. A mean over no
applicable examples is ``nan``.
"""

from __future__ import annotations

import json
import math
import re
import string
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np
import sacrebleu
from jsonschema import exceptions as jsonschema_exceptions
from jsonschema import validators

from tuneforge.eval.refusal import is_refusal
from tuneforge.eval.structured import (
    UNPARSED,
    calls_in,
    parse_json,
    parse_tool_calls,
    same_calls,
    same_names,
)

PerExample = Callable[[list[str], list[str], "MetricContext"], list[float | None]]
Corpus = Callable[[list[str], list[str], "MetricContext"], float]
Stats = Callable[[list[str], list[str], "MetricContext"], np.ndarray]

_ARTICLES = re.compile(r"\b(?:a|an|the)\b", re.IGNORECASE)
_NO_LABEL = "\x00<no label>"  # sentinel class: never equal to a real label


@dataclass(frozen=True)
class Normalization:
    """How texts are normalised before they are compared."""

    lowercase: bool = False
    strip_punctuation: bool = False
    remove_articles: bool = False  # English a/an/the, as in the SQuAD evaluation script
    collapse_whitespace: bool = True  # also strips the ends


@dataclass
class MetricContext:
    """What some metrics need beyond (prediction, reference).

    Attributes:
        normalization: For exact match and label extraction.
        labels: The classification label set; None means the distinct reference labels.
        label_key: Read labels from JSON objects at this key (dotted path: ``"route.team"``).
        json_schema: The schema ``json_schema_valid`` checks against.
        reference_calls: Per example, the expected tool calls (``[{"name", "arguments"}]``),
            or None where the example has none to check.
        refusal_patterns: Extra regular expressions that mark a refusal.
    """

    normalization: Normalization = Normalization()
    labels: tuple[str, ...] | None = None
    label_key: str | None = None
    json_schema: dict | None = None
    reference_calls: list[list[dict] | None] | None = None
    refusal_patterns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Metric:
    """One metric: how to compute it per example (if it is a mean) and over a set.

    ``sufficient_stats`` / ``from_stats`` are set for corpus metrics whose value is a
    function of per-example statistics summed over the set (an ``(n, k)`` array).
    """

    name: str
    description: str
    higher_is_better: bool | None
    per_example: PerExample | None
    corpus: Corpus
    sufficient_stats: Stats | None = None
    from_stats: Callable[[np.ndarray], float] | None = None


def normalize(text: str, how: Normalization) -> str:
    """``text`` normalised as ``how`` says (lowercase, punctuation, articles, whitespace)."""
    if how.lowercase:
        text = text.lower()
    if how.strip_punctuation:
        text = "".join(
            c for c in text if c not in string.punctuation and unicodedata.category(c)[0] != "P"
        )
    if how.remove_articles:
        text = _ARTICLES.sub(" ", text)
    if how.collapse_whitespace:
        text = " ".join(text.split())
    return text


def _mean(values: list[float | None]) -> float:
    applicable = [v for v in values if v is not None]
    return sum(applicable) / len(applicable) if applicable else math.nan


# --- JSON ---------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _validator(schema_text: str) -> Any:
    schema = json.loads(schema_text)
    cls = validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema_exceptions.SchemaError as err:
        raise ValueError(f"eval json_schema is not a valid JSON schema: {err.message}") from err
    return cls(schema)


def _json_valid(preds: list[str], refs: list[str], ctx: MetricContext) -> list[float | None]:
    return [float(parse_json(p) is not UNPARSED) for p in preds]


def _json_schema_valid(preds: list[str], refs: list[str], ctx: MetricContext) -> list[float | None]:
    if ctx.json_schema is None:
        raise ValueError("metric json_schema_valid needs a JSON schema (MetricContext.json_schema)")
    validator = _validator(json.dumps(ctx.json_schema, sort_keys=True))
    values = [parse_json(p) for p in preds]
    return [float(v is not UNPARSED and validator.is_valid(v)) for v in values]


# --- labels -------------------------------------------------------------------------


def _value_at(text: str, key: str) -> str | None:
    """The value at dotted ``key`` in the JSON object ``text``, as a string; None if absent."""
    value = parse_json(text)
    for part in key.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


@lru_cache(maxsize=64)
def _label_patterns(labels: tuple[str, ...], how: Normalization) -> list[tuple[str, re.Pattern]]:
    """Whole-word, case-insensitive patterns for ``labels``, longest label first."""
    patterns = []
    for label in sorted(labels, key=lambda s: (-len(s), s)):
        norm = normalize(label, how)
        if norm:
            patterns.append((label, re.compile(rf"(?<!\w){re.escape(norm)}(?!\w)", re.IGNORECASE)))
    return patterns


def extract_label(text: str, context: MetricContext) -> str | None:
    """The class label in ``text``; None when there is none.

    The rule: with ``context.label_key`` the candidate is the value at that (dotted)
    key of ``text`` parsed as a JSON object (None if it does not parse or lacks the
    key), otherwise the whole text. With ``context.labels`` the answer is the first
    label, longest first, that occurs as a whole word in the normalised candidate
    (case-insensitive); without, it is the normalised candidate itself.
    """
    candidate = _value_at(text, context.label_key) if context.label_key else text
    if candidate is None:
        return None
    how = context.normalization
    if context.labels is None:
        return normalize(candidate, how) or None
    candidate = normalize(candidate, how)
    for label, pattern in _label_patterns(tuple(context.labels), how):
        if pattern.search(candidate):
            return label
    return None


def _labels(
    preds: list[str], refs: list[str], ctx: MetricContext
) -> tuple[list[str | None], list[str], list[str]]:
    """Reference labels, prediction labels (sentinel when none) and the label set.

    Without ``ctx.labels`` the label set is the distinct reference labels, lowercased
    (matching is case-insensitive, so case variants would be one label), and
    predictions are matched against it.
    """
    ref_labels = [extract_label(r, ctx) for r in refs]
    if not ctx.labels:
        ref_labels = [r if r is None else r.lower() for r in ref_labels]
    label_set = sorted(ctx.labels or {r for r in ref_labels if r is not None})
    pred_ctx = replace(ctx, labels=tuple(label_set))
    pred_labels = [extract_label(p, pred_ctx) or _NO_LABEL for p in preds]
    return ref_labels, pred_labels, label_set


def _accuracy(preds: list[str], refs: list[str], ctx: MetricContext) -> list[float | None]:
    ref_labels, pred_labels, _ = _labels(preds, refs, ctx)
    return [
        None if r is None else float(p == r) for p, r in zip(pred_labels, ref_labels, strict=True)
    ]


def _f1_stats(preds: list[str], refs: list[str], ctx: MetricContext) -> np.ndarray:
    """Per example and label: [true positive, false positive, false negative, support]."""
    ref_labels, pred_labels, label_set = _labels(preds, refs, ctx)
    index = {label: i for i, label in enumerate(label_set)}
    stats = np.zeros((len(preds), len(label_set), 4))
    for row, (p, r) in enumerate(zip(pred_labels, ref_labels, strict=True)):
        if r is None:
            continue  # no reference label: the example does not count
        stats[row, index[r], 3] = 1
        if p == r:
            stats[row, index[r], 0] = 1
            continue
        stats[row, index[r], 2] = 1
        if p in index:
            stats[row, index[p], 1] = 1
    return stats.reshape(len(preds), 4 * len(label_set))


def _f1_from_stats(summed: np.ndarray) -> float:
    """Macro F1 over the labels that occur in the references (as sklearn with ``labels=``)."""
    tp, fp, fn, support = summed.reshape(-1, 4).T
    present = support > 0
    if not present.any():
        return math.nan
    f1 = 2 * tp[present] / (2 * tp[present] + fp[present] + fn[present])
    return float(f1.mean())


# --- tool calls ---------------------------------------------------------------------


def _tool_scores(compare: Callable[[list[dict], list[dict]], bool]) -> PerExample:
    def scores(preds: list[str], refs: list[str], ctx: MetricContext) -> list[float | None]:
        calls = ctx.reference_calls or [None] * len(preds)
        if len(calls) != len(preds):
            raise ValueError(f"reference_calls has {len(calls)} entries for {len(preds)} outputs")
        return [
            None if ref is None else float(compare(parse_tool_calls(p), calls_in(ref)))
            for p, ref in zip(preds, calls, strict=True)
        ]

    return scores


# --- text overlap -------------------------------------------------------------------


def _exact_match(preds: list[str], refs: list[str], ctx: MetricContext) -> list[float | None]:
    how = ctx.normalization
    return [float(normalize(p, how) == normalize(r, how)) for p, r in zip(preds, refs, strict=True)]


@lru_cache(maxsize=3)
def _rouge(kind: str) -> Any:
    # Imported here: rouge_score pulls in nltk and scipy, seconds of start-up for every
    # command that merely imports the eval package.
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([kind], use_stemmer=False)


def _rouge_f1(kind: str) -> PerExample:
    def scores(preds: list[str], refs: list[str], ctx: MetricContext) -> list[float | None]:
        scorer = _rouge(kind)
        return [scorer.score(r, p)[kind].fmeasure for p, r in zip(preds, refs, strict=True)]

    return scores


@lru_cache(maxsize=1)
def _sacrebleu_metrics() -> dict[str, Any]:
    return {"bleu": sacrebleu.BLEU(), "chrf": sacrebleu.CHRF()}


def _sacrebleu_stats(name: str) -> Stats:
    # sacrebleu's own paired bootstrap uses these two methods: corpus BLEU/chrF are
    # functions of per-sentence statistics summed over the corpus.
    def stats(preds: list[str], refs: list[str], ctx: MetricContext) -> np.ndarray:
        if len(preds) != len(refs):
            raise ValueError(f"{len(preds)} predictions for {len(refs)} references")
        metric = _sacrebleu_metrics()[name]
        return np.asarray(metric._extract_corpus_statistics(preds, [refs]), dtype=float)

    return stats


def _sacrebleu_from_stats(name: str) -> Callable[[np.ndarray], float]:
    def score(summed: np.ndarray) -> float:
        stats = np.rint(summed).astype(int).tolist()
        return float(_sacrebleu_metrics()[name]._compute_score_from_stats(stats).score)

    return score


# --- lengths and refusals -----------------------------------------------------------


def _length_words(preds: list[str], refs: list[str], ctx: MetricContext) -> list[float | None]:
    return [float(len(p.split())) for p in preds]


def _length_ratio(preds: list[str], refs: list[str], ctx: MetricContext) -> list[float | None]:
    return [len(p.split()) / max(1, len(r.split())) for p, r in zip(preds, refs, strict=True)]


def _refusals(preds: list[str], refs: list[str], ctx: MetricContext) -> list[float | None]:
    return [float(is_refusal(p, ctx.refusal_patterns)) for p in preds]


# --- registry -----------------------------------------------------------------------


_DESCRIPTIONS = {
    "exact_match": "Share of predictions equal to the reference after normalisation",
    "accuracy": "Share of examples whose extracted label matches the reference's",
    "macro_f1": "F1 averaged over the labels in the references (extracted labels)",
    "bleu": "Corpus BLEU, sacrebleu defaults, 0-100 scale",
    "chrf": "Corpus chrF, sacrebleu defaults, 0-100 scale",
    "rouge_1": "Mean ROUGE-1 F1 (word overlap)",
    "rouge_2": "Mean ROUGE-2 F1 (word-pair overlap)",
    "rouge_l": "Mean ROUGE-L F1 (longest common word subsequence)",
    "json_valid": "Share of predictions that parse as JSON",
    "json_schema_valid": "Share of predictions that parse and conform to the JSON schema",
    "tool_call_name_accuracy": "Share of tool-call examples calling the right functions",
    "tool_call_accuracy": "Share of tool-call examples with right functions and arguments",
    "length_words": "Mean words per prediction",
    "length_ratio": "Mean ratio of prediction to reference length in words",
    "refusal_rate": "Share of predictions that refuse",
}
_MEAN_METRICS: tuple[tuple[str, PerExample, bool | None], ...] = (
    ("exact_match", _exact_match, True),
    ("accuracy", _accuracy, True),
    ("rouge_1", _rouge_f1("rouge1"), True),
    ("rouge_2", _rouge_f1("rouge2"), True),
    ("rouge_l", _rouge_f1("rougeL"), True),
    ("json_valid", _json_valid, True),
    ("json_schema_valid", _json_schema_valid, True),
    ("tool_call_name_accuracy", _tool_scores(same_names), True),
    ("tool_call_accuracy", _tool_scores(same_calls), True),
    ("length_words", _length_words, None),
    ("length_ratio", _length_ratio, None),
    ("refusal_rate", _refusals, False),
)
_STATS_METRICS: tuple[tuple[str, Stats, Callable[[np.ndarray], float]], ...] = (
    ("macro_f1", _f1_stats, _f1_from_stats),
    ("bleu", _sacrebleu_stats("bleu"), _sacrebleu_from_stats("bleu")),
    ("chrf", _sacrebleu_stats("chrf"), _sacrebleu_from_stats("chrf")),
)


def _mean_metric(name: str, fn: PerExample, better: bool | None) -> Metric:
    def corpus(preds: list[str], refs: list[str], ctx: MetricContext) -> float:
        return _mean(fn(preds, refs, ctx))

    return Metric(name, _DESCRIPTIONS[name], better, fn, corpus)


def _stats_metric(name: str, stats: Stats, from_stats: Callable[[np.ndarray], float]) -> Metric:
    def corpus(preds: list[str], refs: list[str], ctx: MetricContext) -> float:
        return from_stats(stats(preds, refs, ctx).sum(axis=0)) if preds else math.nan

    return Metric(name, _DESCRIPTIONS[name], True, None, corpus, stats, from_stats)


METRICS: dict[str, Metric] = {row[0]: _mean_metric(*row) for row in _MEAN_METRICS} | {
    row[0]: _stats_metric(*row) for row in _STATS_METRICS
}

_ALWAYS = ("exact_match", "rouge_1", "rouge_2", "rouge_l", "bleu", "chrf")
_DESCRIPTIVE = ("length_words", "length_ratio", "refusal_rate")


def _looks_like_labels(references: list[str]) -> bool:
    """Whether references look like class labels rather than free text.

    All are non-empty and at most 3 words; there are 2 to 20 distinct values
    (case- and whitespace-insensitive) and each value occurs twice on average.
    """
    texts = [normalize(r, Normalization(lowercase=True)) for r in references]
    if not texts or not all(texts) or any(len(t.split()) > 3 for t in texts):
        return False
    distinct = len(set(texts))
    return 2 <= distinct <= 20 and len(texts) >= 2 * distinct


def applicable_metrics(references: list[str], context: MetricContext) -> list[str]:
    """The "auto" metric set for this data.

    Always the text-overlap, length and refusal metrics; ``json_valid`` when at
    least half the references are JSON objects or arrays; ``json_schema_valid``
    with a schema; ``accuracy`` and ``macro_f1`` with a label key or label set, or
    when the references look like labels (see :func:`_looks_like_labels`); the
    tool-call metrics when any example has reference calls.
    """
    names = list(_ALWAYS)
    structured = sum(isinstance(parse_json(r), dict | list) for r in references)
    if references and 2 * structured >= len(references):
        names.append("json_valid")
    if context.json_schema is not None:
        names.append("json_schema_valid")
    if context.label_key or context.labels or _looks_like_labels(references):
        names += ["accuracy", "macro_f1"]
    if context.reference_calls and any(c is not None for c in context.reference_calls):
        names += ["tool_call_name_accuracy", "tool_call_accuracy"]
    return names + list(_DESCRIPTIVE)


def _metric(name: str) -> Metric:
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; valid metrics: {', '.join(METRICS)}")
    return METRICS[name]


def compute(
    names: list[str], predictions: list[str], references: list[str], context: MetricContext
) -> dict[str, float]:
    """Each named metric's corpus value, rounded to 4 decimals.

    Raises:
        ValueError: A name is not a metric, or the lists differ in length.
    """
    metrics = [_metric(name) for name in names]
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    return {m.name: round(m.corpus(predictions, references, context), 4) for m in metrics}


def example_scores(
    name: str, predictions: list[str], references: list[str], context: MetricContext
) -> list[float | None] | None:
    """Per-example values of a mean metric (None entries: not applicable); None for corpus ones."""
    metric = _metric(name)
    if metric.per_example is None:
        return None
    return metric.per_example(predictions, references, context)
