"""Forgetting: what general ability the tune lost, as tuned/base ratios.

Perplexity on held-out general text (bundled English passages plus the user's
files) and, optionally, lm-eval tasks run offline from local task files. A
perplexity ratio above 1 means the tuned model finds ordinary text less likely
than its base did; 1.10 is a common tolerance.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any

from tuneforge.config.eval_schema import RetentionConfig
from tuneforge.data.jsonl import json_lines
from tuneforge.errors import DataError
from tuneforge.eval.likelihood import mean_nll, row_nll, text_rows

BUNDLED = "general_en.txt"


def retention_passages(spec: RetentionConfig) -> dict[str, list[str]]:
    """Passages per source name: ``general`` (bundled) and each user file by its stem."""
    sources: dict[str, list[str]] = {}
    if spec.bundled:
        text = resources.files("tuneforge.eval.suites").joinpath(BUNDLED).read_text("utf-8")
        sources["general"] = _paragraphs(text)[: spec.max_passages]
    for name in spec.texts:
        path = Path(name)
        if not path.is_file():
            raise DataError(f"eval.retention.texts: {path} does not exist")
        passages = _read_passages(path)
        if not passages:
            raise DataError(f"eval.retention.texts: {path} holds no text")
        sources[path.stem] = passages[: spec.max_passages]
    return sources


def _paragraphs(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    blocks = "\n".join(lines).split("\n\n")
    return [" ".join(b.split()) for b in blocks if b.strip()]


def _read_passages(path: Path) -> list[str]:
    """Paragraphs of a text file, or the ``text`` field of each JSON Lines record."""
    if path.suffix != ".jsonl":
        paragraphs = _paragraphs(path.read_text("utf-8"))
        # a file of long lines (one document per line) is split by line instead
        return paragraphs if len(paragraphs) > 1 else path.read_text("utf-8").splitlines()
    passages = []
    for place, record in json_lines(path.read_text("utf-8").splitlines(), str(path)):
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise DataError(f"{place}: a retention record needs a 'text' string")
        passages.append(record["text"])
    return passages


def measure_retention(
    model: Any,
    tokenizer: Any,
    passages: dict[str, list[str]],
    spec: RetentionConfig,
    *,
    batch_size: int,
    label: str,
) -> dict[str, Any]:
    """One model's perplexity per source (and lm-eval scores when tasks are configured)."""
    found: dict[str, Any] = {"perplexity": {}}
    for name, texts in passages.items():
        rows = text_rows(tokenizer, texts, spec.max_tokens)
        values = row_nll(model, rows, batch_size=batch_size, label=f"{label} retention {name}")
        nll = mean_nll(values)
        found["perplexity"][name] = {
            "nll": round(nll, 6),
            "tokens": sum(n for _, n in values),
            "ppl": round(math.exp(nll), 4),
        }
    if spec.lm_eval_tasks:
        from tuneforge.eval.lm_eval_suite import run_lm_eval

        found["lm_eval"] = run_lm_eval(
            model,
            tokenizer,
            spec.lm_eval_tasks,
            include_path=spec.lm_eval_include,
            limit=spec.lm_eval_limit,
            batch_size=batch_size,
        )
    return found


def compare_retention(tuned: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Tuned/base ratios: perplexity per source and overall, lm-eval scores per task.

    The overall ratio is exp(tuned NLL - base NLL) over all tokens of all sources,
    the ratio of token-weighted perplexities.
    """
    sources, nll_tuned, nll_base, tokens = {}, 0.0, 0.0, 0
    for name, mine in tuned["perplexity"].items():
        theirs = base["perplexity"][name]
        sources[name] = {
            "base_ppl": theirs["ppl"],
            "tuned_ppl": mine["ppl"],
            "ppl_ratio": round(math.exp(mine["nll"] - theirs["nll"]), 4),
        }
        nll_tuned += mine["nll"] * mine["tokens"]
        nll_base += theirs["nll"] * theirs["tokens"]
        tokens += mine["tokens"]
    overall = math.exp((nll_tuned - nll_base) / tokens) if tokens else 1.0
    found: dict[str, Any] = {"ppl_ratio": round(overall, 4), "sources": sources}
    if "lm_eval" in tuned:
        found["lm_eval"] = {
            task: {
                metric: {
                    "base": base["lm_eval"][task][metric],
                    "tuned": value,
                    "ratio": round(value / base["lm_eval"][task][metric], 4)
                    if base["lm_eval"][task][metric]
                    else None,
                }
                for metric, value in scores.items()
            }
            for task, scores in tuned["lm_eval"].items()
        }
    return found
