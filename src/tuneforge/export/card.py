"""Model card: what the model is, what it was trained on, how it scored, and how to run it.

Written as the export's ``README.md`` (Hugging Face metadata in the front matter).
Every number comes from the run's own records: the data books, the train summary
and the eval report, so the card cannot disagree with the run directory.
"""

from __future__ import annotations

from typing import Any

import yaml

from tuneforge import __version__
from tuneforge.config.schema import Config
from tuneforge.data.report import markdown_table
from tuneforge.eval.report import gates_table, metrics_table, retention_table, suite_table

RETENTION_WARNING = 1.10  # tuned/base perplexity above this on general text: say it forgot


def model_card(config: Config, lineage: dict[str, Any]) -> str:
    """A Hugging Face README: metadata, details, data, evaluation, use, limits, serving, lineage."""
    sections = [
        _front_matter(config, lineage),
        f"# {config.name}\n\nFine-tuned with [tuneforge](https://pypi.org/project/tuneforge/) "
        f"{__version__}: {config.method.kind} ({config.objective}) on top of "
        f"`{lineage.get('base_model')}`.",
        _details(config, lineage),
        _data(config, lineage),
        _evaluation(lineage),
        _quality(lineage),
        _intended_use(config),
        _limitations(config, lineage),
        _license(config, lineage),
        _serving(config),
        _lineage(config, lineage),
    ]
    return "\n\n".join(s.strip() for s in sections if s) + "\n"


def _front_matter(config: Config, lineage: dict[str, Any]) -> str:
    front: dict[str, Any] = {
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "base_model": lineage.get("base_model"),
        "tags": ["tuneforge", config.method.kind, config.objective],
    }
    spec = config.export
    if spec.license:
        front["license"] = spec.license
    if spec.license_name:
        front["license_name"] = spec.license_name
    if spec.license_link:
        front["license_link"] = spec.license_link
    return f"---\n{yaml.safe_dump(front, sort_keys=False).strip()}\n---"


def _details(config: Config, lineage: dict[str, Any]) -> str:
    """The base model and every setting that shaped the weights."""
    train = (lineage.get("train") or {}).copy()
    method = config.method.model_dump(exclude_defaults=False)
    rows = [["base model", f"`{lineage.get('base_model')}`"]]
    if config.model.revision:
        rows.append(["base model revision", config.model.revision])
    rows += [["objective", config.objective], ["method", config.method.kind]]
    rows += [[f"method.{k}", _cell(v)] for k, v in method.items() if k != "kind"]
    rows += [[f"train.{k}", _cell(v)] for k, v in config.train.model_dump().items()]
    rows.append(["seed", config.seed])
    for key in ("steps", "precision", "device", "trainable_parameters", "total_parameters"):
        if key in train:
            rows.append([key.replace("_", " "), _cell(train[key])])
    if "val_loss_before" in train:
        rows.append(
            ["validation loss", f"{train['val_loss_before']} -> {train.get('val_loss_after')}"]
        )
    return "## Model details\n\n" + markdown_table((["setting", "value"], rows))


def _data(config: Config, lineage: dict[str, Any]) -> str:
    """Sources with hashes, then what cleaning did to them: the books, PII and dedup counts."""
    data = lineage.get("data") or {}
    links = {link.step: link for link in lineage.get("links", [])}
    raw = links.get("raw data")
    sources = (
        "\n".join(f"- `{path}` (sha256 `{digest}`)" for path, digest in raw.files.items())
        if raw and raw.files
        else _source_lines(config, data.get("sha256"))
    )
    dropped = data.get("dropped") or {}
    books = (
        f"{data.get('read', '?')} records read: {data.get('kept', '?')} kept, "
        f"{sum(dropped.values())} dropped, {data.get('quarantined', 0)} quarantined "
        "(malformed, kept aside with the reason)."
    )
    reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(dropped.items()))
    steps = [
        [s["name"], s["seen"], s["kept"], s["changed"], _cell(s.get("dropped") or "")]
        for s in data.get("steps", [])
    ]
    pii = data.get("pii") or {}
    pii_line = (
        "PII found and replaced with placeholders: "
        + ", ".join(f"{n} {kind}" for kind, n in sorted(pii.items()))
        if pii
        else "PII scan: nothing found."
    )
    splits = ", ".join(f"{n} {split}" for split, n in (data.get("splits") or {}).items())
    return (
        f"## Training data\n\n{sources}\n\n{books}"
        + (f" Dropped by reason: {reasons}." if reasons else "")
        + f"\n\n{pii_line}\n\nSplits: {splits or '?'}.\n\n"
        + markdown_table((["step", "seen", "kept", "changed", "dropped"], steps))
    )


def _evaluation(lineage: dict[str, Any]) -> str:
    report = lineage.get("eval") or {}
    if not report.get("metrics"):
        return "## Evaluation\n\n(not evaluated)"
    return (
        f"## Evaluation\n\nOn {report.get('samples', '?')} held-out {report.get('split', 'test')} "
        "samples; base and tuned model decode the same prompts, and each change has a paired "
        "bootstrap interval.\n\n" + markdown_table(metrics_table(report))
    )


def _quality(lineage: dict[str, Any]) -> str:
    """Gates, forgetting, bias and safety, and a warning when failed gates were overridden."""
    report = lineage.get("eval") or {}
    parts = []
    if report.get("gates", {}).get("results"):
        parts.append("### Quality gates\n\n" + markdown_table(gates_table(report["gates"])))
    overridden = lineage.get("gates_overridden") or []
    if overridden:
        parts.append(
            "> **Warning: exported with --force despite failed quality gates:**\n"
            + "\n".join(f"> - {line}" for line in overridden)
        )
    if "retention" in report:
        parts.append(
            "### Forgetting (general-text perplexity)\n\n"
            + markdown_table(retention_table(report["retention"]))
        )
    for suite in ("bias", "safety", "grounding", "judge"):
        if suite in report:
            parts.append(
                f"### {suite.capitalize()}\n\n" + markdown_table(suite_table(report[suite]))
            )
    return "## Quality checks\n\n" + "\n\n".join(parts) if parts else ""


def _source_lines(config: Config, digest: Any) -> str:
    """Each dataset with its hash, where the lineage holds no per-file hashes."""
    data = config.data
    if data.sources is None:
        return f"- `{data.path}` (sha256 `{digest or '?'}`)"
    digests = digest if isinstance(digest, dict) else {}  # a mixture's: by source name
    return "\n".join(
        f"- `{s.path}` ({s.name}, sha256 `{digests.get(s.name, '?')}`)" for s in data.sources
    )


def _data_names(config: Config) -> str:
    """The dataset as prose: its path, or a mixture's source names."""
    if config.data.sources is None:
        return f"`{config.data.path}`"
    return "the mixture of " + ", ".join(f"`{s.name}`" for s in config.data.sources)


def _intended_use(config: Config) -> str:
    use = config.export.intended_use or (
        f"Not stated (set `export.intended_use`). The model was tuned for the task in "
        f"{_data_names(config)} and evaluated only on held-out samples of it."
    )
    return f"## Intended use\n\n{use}"


def _limitations(config: Config, lineage: dict[str, Any]) -> str:
    """The user's own list plus what the run itself shows."""
    found = list(config.export.limitations)
    report = lineage.get("eval") or {}
    samples = report.get("samples")
    if samples is not None and samples < 200:
        found.append(
            f"Evaluated on {samples} samples: differences smaller than the intervals above "
            "are not evidence of a change."
        )
    values = (report.get("values") or {}).get("tuned", {})
    ratio = values.get("retention.ppl_ratio")
    if ratio is not None and ratio > RETENTION_WARNING:
        found.append(
            f"General-text perplexity is {ratio:.2f}x the base model's: the tune has "
            "forgotten some general ability; prefer it for its task."
        )
    for key, label in (("safety.blocked_rate", "red-team prompts got blocked content"),):
        if values.get(key):
            found.append(f"{values[key]:.1%} of {label}.")
    if lineage.get("gates_overridden"):
        found.append("It failed quality gates and was exported anyway (see above).")
    found.append(
        "It inherits the base model's limitations and biases; the bias and safety suites "
        "above are probes, not a guarantee."
    )
    return "## Limitations\n\n" + "\n".join(f"- {line}" for line in found)


def _license(config: Config, lineage: dict[str, Any]) -> str:
    spec = config.export
    if spec.license:
        name = spec.license_name or spec.license
        link = f" ({spec.license_link})" if spec.license_link else ""
        own = f"This model is released under {name}{link}."
    else:
        own = "No licence was set (`export.license`: an SPDX id such as `apache-2.0`, or `other`)."
    return (
        f"## Licence\n\n{own} The base model `{lineage.get('base_model')}` and the training "
        "data keep their own licences and terms, which also apply to this model."
    )


def _serving(config: Config) -> str:
    return f"""## How to use and serve

With transformers (the chat template the model was tuned with is in the tokenizer):

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("merged")
model = AutoModelForCausalLM.from_pretrained("merged")
prompt = tokenizer.apply_chat_template(
    [{{"role": "user", "content": "..."}}], add_generation_prompt=True, tokenize=False
)
inputs = tokenizer(prompt, return_tensors="pt")
print(tokenizer.decode(model.generate(**inputs, max_new_tokens=128)[0]))
```

Behind an OpenAI-compatible API, with adapters, a response cache, guardrails and API keys
(`tuneforge serve`), or with vLLM:

```console
$ tuneforge serve . --port 8000
$ vllm serve ./merged --served-model-name {config.name}
```

`gguf/` files (when exported) run in llama.cpp (`llama-server -m FILE --jinja`), and
`Modelfile` in Ollama (`ollama create {config.name} -f Modelfile`); `onnx/` runs in
onnxruntime.

The `adapter/` folder (when present) loads with PEFT on top of the base model:
`PeftModel.from_pretrained(base, "adapter")`."""


def _lineage(config: Config, lineage: dict[str, Any]) -> str:
    rows = [
        [link.step, f"`{link.where}`", len(link.files), _cell(link.info)]
        for link in lineage.get("links", [])
    ]
    table = markdown_table((["link", "where", "files hashed", "details"], rows)) if rows else ""
    return (
        "## Lineage\n\n"
        f"Run directory `{lineage.get('run_dir')}`, config hash `{lineage.get('config_hash')}`, "
        f"seed {config.seed}. `lineage.json` beside this card holds the sha256 of every file "
        "from the raw data to these weights; `tuneforge lineage <this folder>` re-hashes them "
        f"and says which link changed.\n\n{table}"
    )


def _cell(value: Any) -> str:
    """A compact one-line rendering of a setting for a table cell."""
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_cell(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value) or "-"
    return "-" if value is None else str(value)
