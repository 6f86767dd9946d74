"""Error analysis: the worst examples per metric, and every metric per metadata group."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from tuneforge.config.schema import Config
from tuneforge.eval.evaluate import Examples
from tuneforge.eval.metrics import METRICS, MetricContext, example_scores, extract_label

Scores = dict[str, dict[str, list[float | None]]]  # model -> metric -> per-example value


def per_example_scores(
    report: dict[str, Any], examples: Examples, runs: dict[str, dict[str, Any]], context: Any
) -> Scores:
    """Per-example values of every metric that has them, and the reply loss, per model."""
    found: Scores = {}
    for model, run in runs.items():
        per: dict[str, list[float | None]] = {}
        for name in report["metric_names"]:
            values = example_scores(name, run["outputs"], examples.references, context)
            if values is not None:
                per[name] = values
        per["loss"] = [round(s / n, 4) if n else None for s, n in run["nll"]]
        found[model] = per
    return found


def group_value(record: dict[str, Any], field: str, reference: str, context: MetricContext) -> str:
    """A record's value of a metadata field: ``label`` (the reference's), ``source``
    (its file), a key of ``meta``, or a top-level key."""
    if field == "label":
        return extract_label(reference, context) or "(none)"
    if field == "source":
        return str(record.get("source", "")).rsplit(":", 1)[0] or "(none)"
    meta = record.get("meta") or {}
    value = meta.get(field, record.get(field))
    return "(none)" if value is None else str(value)


def error_analysis(
    report: dict[str, Any],
    examples: Examples,
    runs: dict[str, dict[str, Any]],
    scores: Scores,
    config: Config,
    context: MetricContext,
) -> dict[str, Any]:
    """The tuned model's worst examples per metric and metric means per group."""
    from tuneforge.eval.report import word_diff

    tuned = scores["tuned"]
    worst: dict[str, list[dict[str, Any]]] = {}
    for name, values in tuned.items():
        lower_is_worse = name == "loss" or METRICS[name].higher_is_better is not False
        if name != "loss" and METRICS[name].higher_is_better is None:
            continue
        perfect = 0.0 if not lower_is_worse else 1.0
        ranked = sorted(
            (i for i, v in enumerate(values) if v is not None and (name == "loss" or v != perfect)),
            key=lambda i: values[i] if name != "loss" else -values[i],
        )
        if not lower_is_worse:
            ranked.reverse()
        worst[name] = [
            _example(i, name, examples, runs, scores, word_diff)
            for i in ranked[: config.eval.worst]
        ]
    return {
        "worst": worst,
        "groups": groups(examples, scores, config.eval.group_by, context),
    }


def _example(
    index: int, name: str, examples: Examples, runs: dict[str, Any], scores: Scores, diff: Any
) -> dict[str, Any]:
    prompt = examples.prompts[index]
    output = runs["tuned"]["outputs"][index]
    found = {
        "id": examples.records[index]["id"],
        "input": str(prompt[-1].get("content") or "") if prompt else "",
        "reference": examples.references[index],
        "output": output,
        "score": scores["tuned"][name][index],
        "diff": diff(examples.references[index], output),
    }
    if "base" in runs:
        found["base_output"] = runs["base"]["outputs"][index]
        found["base_score"] = scores["base"][name][index]
    return found


def groups(
    examples: Examples, scores: Scores, fields: list[str], context: MetricContext
) -> dict[str, dict[str, dict[str, Any]]]:
    """For each field, each of its values: example count and each model's metric means."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for field in fields:
        members: dict[str, list[int]] = defaultdict(list)
        for index, record in enumerate(examples.records):
            value = group_value(record, field, examples.references[index], context)
            members[value].append(index)
        found[field] = {
            value: {"n": len(indices), **_means(scores, indices)}
            for value, indices in sorted(members.items())
        }
    return found


def _means(scores: Scores, indices: list[int]) -> dict[str, dict[str, float]]:
    found: dict[str, dict[str, float]] = {}
    for model, per in scores.items():
        for name, values in per.items():
            present = [values[i] for i in indices if values[i] is not None]
            if present:
                found.setdefault(name, {})[model] = round(sum(present) / len(present), 4)
    return found


def error_sections(errors: dict[str, Any]) -> list[tuple[str, Any]]:
    """Report sections: one table per grouping field, one per metric's worst examples."""
    sections: list[tuple[str, Any]] = []
    for field, values in errors["groups"].items():
        metrics = sorted(
            m
            for m in {m for v in values.values() for m in v if m != "n"}
            if m == "loss" or METRICS[m].higher_is_better is not None
        )
        header = [field, "n", *(f"{m} ({model})" for m in metrics for model in ("base", "tuned"))]
        rows = [
            [
                value,
                found["n"],
                *(found.get(m, {}).get(model, "") for m in metrics for model in ("base", "tuned")),
            ]
            for value, found in values.items()
        ]
        sections.append((f"By {field}", (header, rows)))
    for name, rows in errors["worst"].items():
        table_rows = [
            [
                r["id"],
                r["score"],
                r["input"][:160],
                r["reference"][:160],
                r["output"][:160],
                r["diff"][:200],
            ]
            for r in rows
        ]
        header = ["id", name, "input", "reference", "tuned output", "diff (reference -> output)"]
        sections.append((f"Worst examples: {name}", (header, table_rows)))
    return sections
