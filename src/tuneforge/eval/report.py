"""The eval report: tables for people, plots, error analysis, and JSON for machines.

Writes ``report.json`` (everything), ``predictions.jsonl`` (every example with
both models' replies and per-example scores), ``report.md`` and a self-contained
``report.html`` with the plots (``metrics.png``, ``suites.png``) embedded.
"""

from __future__ import annotations

import base64
import difflib
import html
import json
from pathlib import Path
from typing import Any

from tuneforge.config.schema import Config
from tuneforge.data.report import Table, html_table, markdown_table
from tuneforge.eval.evaluate import Examples
from tuneforge.eval.plots import plot_metrics, plot_suites

Section = tuple[str, Table | str]


def write_report(
    out_dir: Path,
    report: dict[str, Any],
    examples: Examples | None,
    runs: dict[str, dict[str, Any]],
    config: Config,
) -> None:
    """Write every report file into ``out_dir``; adds ``details`` (error analysis) to the report."""
    if examples is not None and examples.generative:
        from tuneforge.eval.analysis import error_analysis, per_example_scores
        from tuneforge.eval.assemble import metric_context

        context = metric_context(config, examples)
        scores = per_example_scores(report, examples, runs, context)
        report["details"] = {
            "errors": error_analysis(report, examples, runs, scores, config, context),
        }
        _write_predictions(out_dir, examples, runs, scores)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    plots = [p for p in (plot_metrics(report, out_dir), plot_suites(report, out_dir)) if p]
    sections = report_sections(report)
    title = f"Evaluation on {report['samples']} held-out {report['split']} samples"
    markdown = "\n\n".join(f"## {t}\n\n{_md(body)}" for t, body in sections)
    images = "\n".join(f"![{p.stem}]({p.name})" for p in plots)
    (out_dir / "report.md").write_text(f"# {title}\n\n{markdown}\n\n{images}\n", encoding="utf-8")
    embedded = "".join(
        f'<img alt="{p.stem}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}">'
        for p in plots
    )
    body = "".join(f"<h2>{html.escape(t)}</h2>{_html_body(b)}" for t, b in sections)
    (out_dir / "report.html").write_text(
        _PAGE.format(title=html.escape(title), body=body, images=embedded), encoding="utf-8"
    )


def _md(body: Table | str) -> str:
    return body if isinstance(body, str) else markdown_table(body)


def _html_body(body: Table | str) -> str:
    if isinstance(body, str):  # preformatted Markdown-ish text: keep it readable
        return f"<pre>{html.escape(body)}</pre>"
    return html_table(body)


def report_sections(report: dict[str, Any]) -> list[Section]:
    """Titled tables (or text) in reading order: gates first, then what explains them."""
    sections: list[Section] = []
    if report.get("gates", {}).get("results"):
        sections.append(("Gates", gates_table(report["gates"])))
    sections.append(("Task metrics", metrics_table(report)))
    if "retention" in report:
        sections.append(("Retention (forgetting)", retention_table(report["retention"])))
    for suite in ("safety", "grounding", "bias", "judge"):
        if suite in report:
            sections.append((suite.capitalize(), suite_table(report[suite])))
    if "bias" in report and "tuned" in report["bias"]:
        sections.append(("Largest bias gaps (tuned)", bias_examples(report["bias"]["tuned"])))
    errors = report.get("details", {}).get("errors")
    if errors:
        from tuneforge.eval.analysis import error_sections

        sections.extend(error_sections(errors))
    return sections


def gates_table(gates: dict[str, Any]) -> Table:
    rows = [
        [
            "pass" if r["passed"] else "FAIL",
            r["gate"],
            f"{r['value']:.4f}",
            f"{r['threshold']:.4f}",
            f"{r['margin']:+.4f}",
        ]
        for r in gates["results"]
    ]
    return ["", "gate", "value", "threshold", "margin"], rows


def metrics_table(report: dict[str, Any]) -> Table:
    """Per metric: each model's value; with a base, the change and its bootstrap interval."""
    metrics, comparison = report["metrics"], report.get("comparison", {})
    models = list(metrics)
    header = ["metric", *models]
    if comparison:
        confidence = next(iter(comparison.values()))["confidence"]
        header += ["change", f"{confidence:.0%} interval"]
    rows = []
    for name in metrics["tuned"]:
        row = [name, *(f"{metrics[m][name]:.4f}" for m in models)]
        if comparison:
            found = comparison.get(name)
            row += (
                [f"{found['delta']:+.4f}", f"[{found['low']:+.4f}, {found['high']:+.4f}]"]
                if found
                else ["", ""]
            )
        rows.append(row)
    return header, rows


def retention_table(retention: dict[str, Any]) -> Table:
    comparison = retention.get("comparison", {})
    rows = []
    for source, found in retention["tuned"]["perplexity"].items():
        base = retention.get("base", {}).get("perplexity", {}).get(source, {})
        ratio = comparison.get("sources", {}).get(source, {}).get("ppl_ratio")
        rows.append(
            [
                f"perplexity: {source}",
                base.get("ppl", ""),
                found["ppl"],
                ratio or "",
                found["tokens"],
            ]
        )
    for task, scores in comparison.get("lm_eval", {}).items():
        for metric, found in scores.items():
            rows.append(
                [f"lm-eval {task}: {metric}", found["base"], found["tuned"], found["ratio"]]
            )
    if comparison:
        rows.append(["overall perplexity ratio", "", "", comparison["ppl_ratio"], ""])
    return ["measure", "base", "tuned", "tuned/base", "tokens"], rows


def suite_table(results: dict[str, Any]) -> Table:
    """Scalar results of a suite, one column per model."""
    models = [m for m in results if m in ("tuned", "base")]
    keys = [k for k, v in results[models[0]].items() if isinstance(v, int | float)]
    rows = [[key, *(results[m].get(key, "") for m in models)] for key in keys]
    return ["measure", *models], rows


def bias_examples(tuned: dict[str, Any]) -> Table:
    """The pairs with the largest likelihood gaps (else divergences), with both variants."""
    pairs = tuned.get("largest_likelihood_gap") or tuned.get("largest_divergence") or []
    rows = []
    for pair in pairs:
        prompts, outputs = pair.get("prompts", ["", ""]), pair.get("outputs", ["", ""])
        gap = pair.get("likelihood_gap")
        rows.append(
            [
                pair.get("group", ""),
                "" if gap is None else f"{gap:.4f}",
                f"{pair.get('divergence', 0):.4f}",
                f"{prompts[0]} -> {outputs[0]}",
                f"{prompts[1]} -> {outputs[1]}",
            ]
        )
    return ["group", "likelihood gap", "divergence", "variant A", "variant B"], rows


def word_diff(reference: str, output: str) -> str:
    """Inline word diff: ``[-removed-]`` and ``{+added+}`` as wdiff writes them."""
    a, b = reference.split(), output.split()
    parts = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            parts.append(" ".join(a[i1:i2]))
            continue
        if i2 > i1:
            parts.append("[-" + " ".join(a[i1:i2]) + "-]")
        if j2 > j1:
            parts.append("{+" + " ".join(b[j1:j2]) + "+}")
    return " ".join(parts)


def _write_predictions(
    out_dir: Path,
    examples: Examples,
    runs: dict[str, dict[str, Any]],
    scores: dict[str, dict[str, list[float | None]]],
) -> None:
    with open(out_dir / "predictions.jsonl", "w", encoding="utf-8") as handle:
        for index, record in enumerate(examples.records):
            row: dict[str, Any] = {"id": record["id"], "reference": examples.references[index]}
            row.update({model: run["outputs"][index] for model, run in runs.items()})
            row["scores"] = {
                model: {name: values[index] for name, values in per.items()}
                for model, per in scores.items()
            }
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse;margin-bottom:1rem}}
td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;vertical-align:top}}
th{{background:#f3f3f3}}pre{{white-space:pre-wrap;background:#f8f8f8;padding:.5rem}}
img{{max-width:100%}}</style></head>
<body><h1>{title}</h1>{body}{images}</body></html>
"""
