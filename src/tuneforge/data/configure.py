"""Turn the ``data`` config section into the list of steps the data stage runs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from tuneforge.config.schema import DataConfig
from tuneforge.data.clean import (
    QualityFilter,
    QualityRules,
    TextMapStep,
    normalize_text,
    strip_markup,
)
from tuneforge.data.decontaminate import DecontaminateStep, build_index
from tuneforge.data.dedup import ExactDedup, NearDedup, largest_clusters
from tuneforge.data.pii import PiiStep
from tuneforge.data.sample import Sample
from tuneforge.data.steps import FilterStep, Step
from tuneforge.errors import DataError
from tuneforge.plugins import load_function

# The sample kinds each objective trains on. KTO takes a preference pair as two unpaired
# rows (chosen desirable, rejected undesirable); online RL uses only the prompts.
OBJECTIVE_KINDS = {
    "sft": ("chat",),
    "pretrain": ("text", "chat"),
    "reward": ("preference",),
    "dpo": ("preference",),
    "orpo": ("preference",),
    "simpo": ("preference",),
    "kto": ("unpaired", "preference"),
    "grpo": ("chat", "preference"),
    "rloo": ("chat", "preference"),
}
# The folder each objective's training rows go to beside tokens/ (sft and pretrain: none).
OBJECTIVE_OUTPUTS = {
    "reward": "pairs",
    "dpo": "pairs",
    "orpo": "pairs",
    "simpo": "pairs",
    "kto": "unpaired",
    "grpo": "prompts",
    "rloo": "prompts",
}


def data_family(objective: str) -> str:
    """What the data stage prepares for an objective: ``sft``, ``pretrain``, ``pairs``,
    ``unpaired`` or ``prompts``. Objectives of one family share a prepared data stage."""
    return OBJECTIVE_OUTPUTS.get(objective, objective)


def build_steps(
    data: DataConfig, tokenizer: PreTrainedTokenizerBase | None = None, objective: str = "sft"
) -> list[Step]:
    """The steps before the split, in order: kind, normalise, markup, quality, dedup, PII."""
    kinds, family = OBJECTIVE_KINDS[objective], data_family(objective)
    steps: list[Step] = [
        FilterStep("kind", lambda s: (s.kind in kinds, f"kind_{s.kind}_not_used_for_{family}"))
    ]
    clean = data.clean
    if clean.normalize:
        steps.append(TextMapStep("normalize", normalize_text))
    if clean.strip_html:
        steps.append(TextMapStep("strip_html", strip_markup))
    steps.append(QualityFilter(_rules(data)))
    if data.dedup.exact:
        steps.append(ExactDedup())
    if data.dedup.near:
        dedup = data.dedup
        steps.append(
            NearDedup(
                threshold=dedup.threshold,
                num_perm=dedup.num_perm,
                shingle=dedup.shingle,
                shingle_size=dedup.shingle_size,
            )
        )
    pii = data.pii
    if pii.mode != "off":
        steps.append(
            PiiStep(
                mode=pii.mode,
                types=pii.types,
                presidio=pii.presidio,
                presidio_entities=tuple(pii.presidio_entities),
            )
        )
    return steps


def build_decontaminate(data: DataConfig, held_out: Iterable[Sample]) -> DecontaminateStep | None:
    """The step that removes training samples overlapping held-out data or benchmarks."""
    spec = data.decontaminate
    if spec.mode == "off":
        return None
    base = data.folder()
    files = [Path(p) if Path(p).is_absolute() else base / p for p in spec.benchmarks]
    for path in files:
        if not path.is_file():
            raise DataError(f"data.decontaminate.benchmarks: {str(path)!r} not found")
    return DecontaminateStep(build_index(held_out, files, n=spec.ngram), mode=spec.mode)


def cluster_report(steps: list[Step], n: int = 10) -> list[dict[str, Any]]:
    """The largest duplicate clusters found by the dedup steps, for the report."""
    clusters = [
        c for s in steps if isinstance(s, ExactDedup | NearDedup) for c in s.clusters.values()
    ]
    return [cluster.to_json() for cluster in largest_clusters(clusters, n) if cluster.duplicates]


def _rules(data: DataConfig) -> QualityRules:
    clean = data.clean
    extra: set[str] = set()
    for name in clean.wordlists:
        path = Path(name) if Path(name).is_absolute() else data.folder() / name
        if not path.is_file():
            raise DataError(f"data.clean.wordlists: {str(path)!r} not found")
        extra |= {w.strip().lower() for w in path.read_text("utf-8").splitlines() if w.strip()}
    return QualityRules(
        min_chars=clean.min_chars,
        max_chars=clean.max_chars,
        max_duplicate_line_ratio=clean.max_duplicate_line_ratio,
        max_symbol_ratio=clean.max_symbol_ratio,
        max_repeated_ngram_ratio=clean.max_repeated_ngram_ratio,
        languages=tuple(clean.languages) if clean.languages else None,
        max_profanity=clean.max_profanity,
        extra_words=frozenset(extra),
        classifier=toxicity_classifier(clean.toxicity_classifier, data.folder()),
        classifier_threshold=clean.toxicity_threshold,
    )


def toxicity_classifier(
    spec: str | None,
    base: Path | None,
    key: str = "data.clean.toxicity_classifier",
    error: type[Exception] = DataError,
) -> Callable[[str], float] | None:
    """Load a ``module:function`` toxicity scorer (a module or a .py file), checked to
    return a score in [0, 1]; ``key`` and ``error`` say whose setting it is."""
    if spec is None:
        return None
    function = load_function(spec, key, base, error)

    def score(text: str) -> float:
        value = function(text)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise error(f"{key}: {spec} returned {value!r}; it must return a score between 0 and 1")
        return float(value)

    return score
