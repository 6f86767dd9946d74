"""Model card: what the model is, what it was trained on, and how it scored."""

from __future__ import annotations

from typing import Any

import yaml

from tuneforge import __version__
from tuneforge.config.schema import Config


def model_card(config: Config, lineage: dict[str, Any]) -> str:
    """A Hugging Face README with metadata, lineage, metrics and usage."""
    metrics = lineage.get("eval", {}).get("metrics", {})
    front = {
        "library_name": "transformers",
        "base_model": lineage.get("base_model"),
        "tags": ["tuneforge", config.method.kind, config.objective],
    }
    rows = "\n".join(
        f"| {name} | {metrics.get('base', {}).get(name, float('nan')):.3f} | {value:.3f} |"
        for name, value in metrics.get("tuned", {}).items()
    )
    checks = _quality_section(lineage)
    data = lineage.get("data", {})
    return f"""---
{yaml.safe_dump(front, sort_keys=False).strip()}
---

# {config.name}

Fine-tuned with [tuneforge](https://pypi.org/project/tuneforge/) {__version__}:
{config.method.kind} ({config.objective}) on top of `{lineage.get("base_model")}`.

## Evaluation (held-out test split)

| metric | base | tuned |
|---|---|---|
{rows or "| (not evaluated) | | |"}
{checks}
## Lineage

- base model: `{lineage.get("base_model")}`
- training data: `{config.data.path}` (sha256 `{data.get("sha256", "?")}`), \
{data.get("kept", "?")} samples kept of {data.get("read", "?")} read
- run directory: `{lineage.get("run_dir")}`
- config hash: `{lineage.get("config_hash")}`, seed {config.seed}
- method: {config.method.model_dump_json()}
- training: {config.train.model_dump_json()}

## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("merged")
model = AutoModelForCausalLM.from_pretrained("merged")
prompt = tokenizer.apply_chat_template(
    [{{"role": "user", "content": "..."}}], add_generation_prompt=True, tokenize=False
)
```
"""


def _quality_section(lineage: dict[str, Any]) -> str:
    """Retention, safety and gate results, and a warning when failed gates were overridden."""
    report = lineage.get("eval", {})
    values = report.get("values", {}).get("tuned", {})
    lines = [
        f"- {label}: {values[key]:.4f}"
        for key, label in (
            ("retention.ppl_ratio", "retention (general-text perplexity, tuned/base)"),
            ("safety.refusal_rate", "red-team refusal rate"),
            ("safety.blocked_rate", "red-team blocked-content rate"),
            ("grounding.flagged_rate", "ungrounded-answer rate"),
            ("bias.max_likelihood_gap", "largest bias-probe likelihood gap"),
        )
        if key in values
    ]
    gates = report.get("gates", {}).get("results", [])
    lines += [f"- gate {'passed' if g['passed'] else 'FAILED'}: `{g['gate']}`" for g in gates]
    overridden = lineage.get("gates_overridden") or []
    warning = (
        "\n> **Warning: exported with --force despite failed quality gates:**\n"
        + "\n".join(f"> - {line}" for line in overridden)
        + "\n"
        if overridden
        else ""
    )
    body = "\n".join(lines)
    return f"\n### Quality checks\n\n{body or '(none run)'}\n{warning}" if lines or warning else ""
