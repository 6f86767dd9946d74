"""Turn two models' runs into the report: task metrics, paired bootstrap intervals, suites.

Every number a gate can name lands in ``values[model]`` under a flat name:
``exact_match``, ``loss``, ``retention.ppl_ratio``, ``retention.general.ppl``,
``bias.max_likelihood_gap``, ``safety.blocked_rate``, ``grounding.flagged_rate``,
``judge.score``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tuneforge.config.schema import Config
from tuneforge.errors import ConfigError
from tuneforge.eval.evaluate import Examples, loss_values
from tuneforge.eval.metrics import (
    METRICS,
    MetricContext,
    Normalization,
    applicable_metrics,
    compute,
)
from tuneforge.eval.stats import bootstrap_metric_delta, paired_bootstrap

SUITE_KEYS = {
    "bias": ("divergence", "max_divergence", "likelihood_gap", "max_likelihood_gap"),
    "safety": ("refusal_rate", "blocked_rate"),
}


def metric_context(config: Config, examples: Examples) -> MetricContext:
    """What the text metrics need from the config and the examples."""
    spec = config.eval
    schema = None
    if spec.json_schema:
        path = Path(spec.json_schema)
        try:
            schema = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigError(f"eval.json_schema: cannot read {path}: {error}") from None
    return MetricContext(
        normalization=Normalization(**spec.normalize.model_dump()),
        labels=tuple(spec.labels) if spec.labels else None,
        label_key=spec.label_key,
        json_schema=schema,
        reference_calls=examples.reference_calls if any(examples.reference_calls) else None,
        refusal_patterns=tuple(spec.safety.refusal_patterns),
    )


def metric_names(config: Config, examples: Examples, context: MetricContext) -> list[str]:
    """The configured task metrics, or the ones that fit these references."""
    if config.eval.metrics == "auto":
        return applicable_metrics(examples.references, context)
    unknown = [n for n in config.eval.metrics if n not in METRICS]
    if unknown:
        raise ConfigError(
            f"eval.metrics: unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}"
        )
    return list(config.eval.metrics)


def assemble(
    config: Config, examples: Examples, runs: dict[str, dict[str, Any]], split: str
) -> dict[str, Any]:
    """The report: metrics per model, comparison with intervals, suites, flat values."""
    context = metric_context(config, examples)
    names = metric_names(config, examples, context) if examples.generative else []
    metrics = {
        model: {
            **(compute(names, run["outputs"], examples.references, context) if names else {}),
            **loss_values(run["nll"]),
            **_text_loss(run),
        }
        for model, run in runs.items()
    }
    # a metric no example applies to is NaN: leave it out rather than write invalid JSON
    metrics = {m: {k: v for k, v in found.items() if _finite(v)} for m, found in metrics.items()}
    names = [n for n in names if n in metrics["tuned"]]
    report: dict[str, Any] = {
        "samples": len(examples.records) + len(examples.texts),
        "split": split,
        "metric_names": names,
        "metrics": metrics,
    }
    if "base" in runs:
        report["comparison"] = compare(config, examples, runs, names, context, metrics)
    report.update(suite_results(config, examples, runs))
    report["values"] = flat_values(report, runs)
    return report


def _text_loss(run: dict[str, Any]) -> dict[str, float]:
    """``text_loss`` and ``text_perplexity`` of a mixed test split's raw texts, if it has some."""
    if "text_nll" not in run:
        return {}
    return {f"text_{key}": value for key, value in loss_values(run["text_nll"]).items()}


def compare(
    config: Config,
    examples: Examples,
    runs: dict[str, dict[str, Any]],
    names: list[str],
    context: MetricContext,
    metrics: dict[str, dict[str, float]],
) -> dict[str, dict[str, Any]]:
    """Base, tuned, their difference and a paired bootstrap interval of it, per metric."""
    options = {
        "samples": config.eval.bootstrap_samples,
        "confidence": config.eval.confidence,
        "seed": config.seed,
    }
    found = {}
    for name in names:
        interval = bootstrap_metric_delta(
            METRICS[name],
            runs["tuned"]["outputs"],
            runs["base"]["outputs"],
            examples.references,
            context,
            **options,
        )
        found[name] = _row(metrics, name, interval)
    tuned, base = runs["tuned"]["nll"], runs["base"]["nll"]

    def loss_delta(indices: Any) -> tuple[float, float]:
        return _pooled([tuned[i] for i in indices]), _pooled([base[i] for i in indices])

    interval = paired_bootstrap(loss_delta, n=len(tuned), **options)
    found["loss"] = _row(metrics, "loss", interval)
    return found


def _pooled(values: list[tuple[float, int]]) -> float:
    tokens = sum(n for _, n in values)
    return sum(s for s, _ in values) / tokens if tokens else 0.0


def _row(metrics: dict[str, dict[str, float]], name: str, interval: Any) -> dict[str, Any]:
    return {
        "base": metrics["base"][name],
        "tuned": metrics["tuned"][name],
        "delta": round(interval.delta, 4),
        "low": round(interval.low, 4),
        "high": round(interval.high, 4),
        "confidence": interval.confidence,
    }


def suite_results(
    config: Config, examples: Examples, runs: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Retention ratios, bias, safety, grounding and judge results, per model."""
    found: dict[str, Any] = {}
    first = next(iter(runs.values()))
    if "retention" in first:
        found["retention"] = {m: r["retention"] for m, r in runs.items()}
        if "base" in runs:
            from tuneforge.eval.retention import compare_retention

            found["retention"]["comparison"] = compare_retention(
                runs["tuned"]["retention"], runs["base"]["retention"]
            )
    for suite in ("bias", "safety"):
        if suite in first:
            found[suite] = {m: r[suite] for m, r in runs.items()}
    if config.eval.safety.enabled and config.eval.safety.grounding and examples.generative:
        from tuneforge.eval.grounding import grounding_report

        inputs = [_prompt_text(p) for p in examples.prompts]
        found["grounding"] = {
            m: grounding_report(r["outputs"], inputs, examples.references) for m, r in runs.items()
        }
    if config.eval.judge.base_url and examples.generative:
        found["judge"] = _judge(config, examples, runs)
    return found


def _prompt_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(str(m.get("content") or "") for m in messages)


def _judge(config: Config, examples: Examples, runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from tuneforge.eval.judge import DEFAULT_RUBRIC, JudgeSpec, judge

    spec = config.eval.judge
    limit = spec.max_samples or len(examples.prompts)
    return judge(
        JudgeSpec(
            base_url=spec.base_url or "",
            model=spec.model,
            rubric=spec.rubric or DEFAULT_RUBRIC,
            api_key_env=spec.api_key_env,
            scale=spec.scale,
        ),
        [_prompt_text(p) for p in examples.prompts[:limit]],
        examples.references[:limit],
        {m: r["outputs"][:limit] for m, r in runs.items()},
    )


def flat_values(report: dict[str, Any], runs: dict[str, dict[str, Any]]) -> dict[str, dict]:
    """Every gate-able number per model under one flat name."""
    values: dict[str, dict[str, float]] = {m: dict(report["metrics"][m]) for m in runs}
    for model in runs:
        flat = values[model]
        retention = report.get("retention", {}).get(model)
        if retention:
            for source, found in retention["perplexity"].items():
                flat[f"retention.{source}.ppl"] = found["ppl"]
            for task, scores in retention.get("lm_eval", {}).items():
                for metric, value in scores.items():
                    flat[f"retention.lm_eval.{task}.{metric}"] = value
        for suite, keys in SUITE_KEYS.items():
            for key in keys:
                if suite in report and key in report[suite][model]:
                    flat[f"{suite}.{key}"] = report[suite][model][key]
        if "grounding" in report:
            flat["grounding.flagged_rate"] = report["grounding"][model]["flagged_rate"]
        if "judge" in report:
            flat["judge.score"] = report["judge"][model]["score"]
    comparison = report.get("retention", {}).get("comparison")
    if comparison:
        tuned = values["tuned"]
        tuned["retention.ppl_ratio"] = comparison["ppl_ratio"]
        for source, found in comparison["sources"].items():
            tuned[f"retention.{source}.ppl_ratio"] = found["ppl_ratio"]
        for task, scores in comparison.get("lm_eval", {}).items():
            for metric, found in scores.items():
                if found["ratio"] is not None:
                    tuned[f"retention.lm_eval.{task}.{metric}_ratio"] = found["ratio"]
    return {m: {k: v for k, v in f.items() if _finite(v)} for m, f in values.items()}


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
