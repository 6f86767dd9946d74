"""The eval stage: base and tuned side by side on the held-out test split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneforge.config.schema import Config
from tuneforge.data.prepare import read_split
from tuneforge.data.render import prompt_messages
from tuneforge.errors import DataError
from tuneforge.eval.generate import generate
from tuneforge.eval.metrics import score
from tuneforge.models.hardware import device, resolve_dtype
from tuneforge.models.load import load_tokenizer
from tuneforge.train.methods import is_peft, load_base, load_trained


def evaluate(
    config: Config, model_path: str, data_dir: Path, train_dir: Path, out_dir: Path
) -> dict[str, Any]:
    """Generate on the test split with the tuned model (and the base), score, and report.

    Writes ``predictions.jsonl``, ``report.json`` and ``report.md`` into ``out_dir``.
    """
    records = read_split(data_dir, "test") or read_split(data_dir, "val")
    if not records:
        raise DataError("eval: the test and validation splits are empty; raise data.test_fraction")
    records = records[: config.eval.max_samples] if config.eval.max_samples else records
    split = "test" if read_split(data_dir, "test") else "val"
    if config.objective == "reward":
        return evaluate_reward_model(config, model_path, records, train_dir, out_dir, split)
    records = [r for r in records if r.get("label", True) is not False]  # KTO: desirable only
    prompts, references = zip(*(prompt_and_reference(r) for r in records), strict=True)
    spec = config.model
    dev = device()
    tokenizer = load_tokenizer(
        model_path, revision=spec.revision, trust_remote_code=spec.trust_remote_code
    )
    dtype = resolve_dtype(spec.precision, dev)
    model = load_trained(model_path, config, train_dir, dtype, dev)
    options = {
        "max_new_tokens": config.eval.max_new_tokens,
        "batch_size": config.eval.batch_size,
        "tools": [r.get("tools") for r in records],
        "template": config.data.template,
    }
    outputs = {"tuned": generate(model, tokenizer, list(prompts), label="eval tuned", **options)}
    if config.eval.compare_base and is_peft(config.method):
        with model.disable_adapter():
            outputs["base"] = generate(
                model, tokenizer, list(prompts), label="eval base", **options
            )
    elif config.eval.compare_base:
        del model  # full/freeze: the tuned weights are a whole model; hold one at a time
        base = load_base(model_path, config, dtype, dev)
        outputs["base"] = generate(base, tokenizer, list(prompts), label="eval base", **options)
    report = {
        "samples": len(records),
        "split": split,
        "metrics": {name: score(preds, list(references)) for name, preds in outputs.items()},
    }
    with open(out_dir / "predictions.jsonl", "w", encoding="utf-8") as handle:
        for index, record in enumerate(records):
            row = {"id": record["id"], "reference": references[index]}
            row.update({name: preds[index] for name, preds in outputs.items()})
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "report.md").write_text(markdown_table(report) + "\n")
    return report


def prompt_and_reference(record: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """A test record's prompt messages and reference reply (the chosen one of a pair)."""
    if "input" in record:  # an OpenAI preference record
        chosen = record.get("preferred_output") or [{}]
        return record["input"]["messages"], str(chosen[-1].get("content") or "")
    messages = record["messages"]
    if not any(m["role"] == "assistant" for m in messages):
        return messages, ""
    return prompt_messages(messages)


def evaluate_reward_model(
    config: Config,
    model_path: str,
    records: list[dict[str, Any]],
    train_dir: Path,
    out_dir: Path,
    split: str = "test",
) -> dict[str, Any]:
    """Pairwise accuracy and mean margin of the reward model (and its base) on held-out pairs."""
    pairs = [r for r in records if "input" in r]
    if not pairs:
        raise DataError(f"eval: no preference pairs in the {split} split")
    spec, dev = config.model, device()
    dtype = resolve_dtype(spec.precision, dev)
    tokenizer = load_tokenizer(
        model_path, revision=spec.revision, trust_remote_code=spec.trust_remote_code
    )
    sides = [
        [[*r["input"]["messages"], *r[key]] for r in pairs]
        for key in ("preferred_output", "non_preferred_output")
    ]
    options = {"batch_size": config.eval.batch_size, "max_length": config.data.max_length}
    model = load_trained(model_path, config, train_dir, dtype, dev)
    found = {"tuned": reward_margins(model, tokenizer, *sides, **options)}
    if config.eval.compare_base and is_peft(config.method):
        with model.disable_adapter():
            found["base"] = reward_margins(model, tokenizer, *sides, **options)
    elif config.eval.compare_base:
        del model  # the base has an untrained score head: the chance-level reference
        base = load_base(model_path, config, dtype, dev)
        found["base"] = reward_margins(base, tokenizer, *sides, **options)
    metrics = {
        name: {
            "pairwise_accuracy": round(sum(m > 0 for m in values) / len(values), 4),
            "mean_margin": round(sum(values) / len(values), 4),
        }
        for name, values in found.items()
    }
    report = {"samples": len(pairs), "split": split, "metrics": metrics}
    with open(out_dir / "predictions.jsonl", "w", encoding="utf-8") as handle:
        for index, record in enumerate(pairs):
            row = {"id": record["id"], **{f"{n}_margin": v[index] for n, v in found.items()}}
            handle.write(json.dumps(row) + "\n")
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "report.md").write_text(markdown_table(report) + "\n")
    return report


def reward_margins(
    model: Any,
    tokenizer: Any,
    chosen: list[list[dict[str, Any]]],
    rejected: list[list[dict[str, Any]]],
    *,
    batch_size: int,
    max_length: int | None,
) -> list[float]:
    """Score of each chosen conversation minus that of its rejected one."""
    from tuneforge.train.reward import score_conversations

    good = score_conversations(model, tokenizer, chosen, batch_size, max_length)
    bad = score_conversations(model, tokenizer, rejected, batch_size, max_length)
    return [c - r for c, r in zip(good, bad, strict=True)]


def markdown_table(report: dict[str, Any]) -> str:
    """Base vs tuned metrics as a Markdown table."""
    metrics = report["metrics"]
    names = list(next(iter(metrics.values())))
    header = "| metric | " + " | ".join(metrics) + (" | delta |" if "base" in metrics else " |")
    lines = [header, "|" + "---|" * (len(metrics) + 1 + ("base" in metrics))]
    for name in names:
        cells = [f"{metrics[m][name]:.3f}" for m in metrics]
        if "base" in metrics:
            cells.append(f"{metrics['tuned'][name] - metrics['base'][name]:+.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return f"Evaluated on {report['samples']} {report['split']} samples.\n\n" + "\n".join(lines)
