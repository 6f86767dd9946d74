"""The eval stage: base and tuned side by side on the same examples, suites, gates, report.

Each model (the tuned one, then its base: the adapter switched off, or the base
weights loaded after the tuned ones are freed) runs the same work: generation on
the test split, reply loss, and the retention, bias and safety suites. The two
runs are then compared with paired bootstrap intervals, the gates are checked
and the report is written.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.config.schema import Config
from tuneforge.data.prepare import read_split
from tuneforge.data.render import prompt_messages
from tuneforge.errors import DataError
from tuneforge.eval.generate import Sampling, generate
from tuneforge.eval.likelihood import mean_nll, reply_rows, row_nll, text_rows
from tuneforge.models.hardware import device, resolve_dtype
from tuneforge.models.load import load_tokenizer
from tuneforge.train.methods import is_peft, load_base, load_trained

Message = dict[str, Any]


@dataclass
class Examples:
    """The held-out examples every model is run on."""

    records: list[dict[str, Any]]  # the chat records, aligned with prompts and references
    prompts: list[list[Message]] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    tools: list[list[dict] | None] = field(default_factory=list)
    reference_calls: list[list[dict] | None] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # raw-text records (pretrain objective)

    @property
    def generative(self) -> bool:
        return bool(self.prompts)


def evaluate(
    config: Config, model_path: str, data_dir: Path, train_dir: Path, out_dir: Path
) -> dict[str, Any]:
    """Evaluate the tuned model and its base; write the report; return the stage summary.

    Writes ``predictions.jsonl``, ``report.json``, ``report.md``, ``report.html`` and
    plots into ``out_dir``. Gates are checked and recorded in the summary; the caller
    decides what a failed gate stops.
    """
    from tuneforge.eval.assemble import assemble
    from tuneforge.eval.report import write_report

    records, split = test_records(config, data_dir)
    if config.objective == "reward":
        from tuneforge.eval.reward_eval import evaluate_reward_model

        report = evaluate_reward_model(config, model_path, records, train_dir, out_dir, split)
        report["gates"] = _gates(config, report["values"])
        write_report(out_dir, report, None, {}, config)
        return summary_of(report)
    examples = build_examples(records)
    suites = load_suites(config)
    spec, dev = config.model, device()
    tokenizer = load_tokenizer(
        model_path, revision=spec.revision, trust_remote_code=spec.trust_remote_code
    )
    dtype = resolve_dtype(spec.precision, dev)
    model = load_trained(model_path, config, train_dir, dtype, dev)
    runs = {"tuned": run_model(model, tokenizer, examples, suites, config, "tuned")}
    if config.eval.compare_base and is_peft(config.method):
        with model.disable_adapter():
            runs["base"] = run_model(model, tokenizer, examples, suites, config, "base")
    elif config.eval.compare_base:
        del model  # full/freeze: the tuned weights are a whole model; hold one at a time
        gc.collect()
        base = load_base(model_path, config, dtype, dev)
        runs["base"] = run_model(base, tokenizer, examples, suites, config, "base")
    report = assemble(config, examples, runs, split)
    report["gates"] = _gates(config, report["values"])
    write_report(out_dir, report, examples, runs, config)
    return summary_of(report)


def _gates(config: Config, values: dict[str, dict[str, float]]) -> dict[str, Any]:
    from tuneforge.eval.gates import check_gates, gate_summary

    results = check_gates(config.eval.gates, values["tuned"], values.get("base"), config.runs_dir)
    return gate_summary(results)


def summary_of(report: dict[str, Any]) -> dict[str, Any]:
    """What the stage records: the report without its example-level details."""
    return {key: value for key, value in report.items() if key != "details"}


def test_records(config: Config, data_dir: Path) -> tuple[list[dict[str, Any]], str]:
    """The test split (the validation split when there is none), capped at eval.max_samples."""
    records, split = read_split(data_dir, "test"), "test"
    if not records:
        records, split = read_split(data_dir, "val"), "val"
    if not records:
        raise DataError("eval: the test and validation splits are empty; raise data.test_fraction")
    records = [r for r in records if r.get("label", True) is not False]  # KTO: desirable only
    return records[: config.eval.max_samples] if config.eval.max_samples else records, split


def build_examples(records: list[dict[str, Any]]) -> Examples:
    """Prompts, references, tools and reference tool calls of the test records.

    Raw-text records (continued pre-training) go to ``texts``, measured by their loss;
    ``records`` keeps the others, in step with ``prompts`` and ``references``.
    """
    examples = Examples([])
    for record in records:
        if "text" in record and "messages" not in record:
            examples.texts.append(record["text"])
            continue
        examples.records.append(record)
        prompt, reference, calls = prompt_and_reference(record)
        examples.prompts.append(prompt)
        examples.references.append(reference)
        examples.tools.append(record.get("tools"))
        examples.reference_calls.append(calls)
    return examples


def prompt_and_reference(
    record: dict[str, Any],
) -> tuple[list[Message], str, list[dict] | None]:
    """A test record's prompt, its reference reply (a pair's chosen one) and tool calls."""
    if "input" in record:  # an OpenAI preference record
        chosen = record.get("preferred_output") or [{}]
        return record["input"]["messages"], str(chosen[-1].get("content") or ""), None
    messages = record["messages"]
    if not any(m["role"] == "assistant" for m in messages):
        return messages, "", None
    prompt, _ = prompt_messages(messages)
    reply = messages[len(prompt)]
    calls = [_call(c) for c in reply.get("tool_calls") or []] or None
    reference = reply.get("content") or ""
    if calls and not reference:
        reference = json.dumps(calls, ensure_ascii=False)
    return prompt, reference, calls


def _call(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function", call)
    arguments = function.get("arguments") or {}
    if isinstance(arguments, str):
        with contextlib.suppress(json.JSONDecodeError):  # kept as the string it is
            arguments = json.loads(arguments)
    return {"name": function.get("name"), "arguments": arguments}


@dataclass
class Suites:
    """The suite inputs loaded once and run on both models."""

    passages: dict[str, list[str]] | None = None
    probes: Any = None
    red_team: Any = None
    classifier: Any = None  # the data layer's toxicity classifier plug-in, if configured


def load_suites(config: Config) -> Suites:
    """Retention passages, bias probes and red-team prompts, as the eval config enables them."""
    spec, suites = config.eval, Suites()
    if spec.retention.enabled:
        from tuneforge.eval.retention import retention_passages

        suites.passages = retention_passages(spec.retention)
    if spec.bias.enabled:
        from tuneforge.eval.bias import load_probes

        suites.probes = load_probes(spec.bias.probes, include_bundled=spec.bias.bundled)
    if spec.safety.enabled:
        from tuneforge.eval.safety import load_red_team

        suites.red_team = load_red_team(spec.safety.prompts, include_bundled=spec.safety.bundled)
        suites.classifier = _classifier(config)
    return suites


def run_model(
    model: Any, tokenizer: Any, examples: Examples, suites: Suites, config: Config, name: str
) -> dict[str, Any]:
    """Everything one model is measured on: outputs, reply loss and the suites."""
    spec, template = config.eval, config.data.template
    found: dict[str, Any] = {}
    if examples.generative:
        sampling = Sampling(
            max_new_tokens=spec.max_new_tokens,
            temperature=spec.temperature,
            top_p=spec.top_p,
            stop=tuple(spec.stop),
            seed=config.seed,
        )
        found["outputs"] = generate(
            model,
            tokenizer,
            examples.prompts,
            sampling=sampling,
            batch_size=spec.batch_size,
            label=f"eval {name}",
            tools=examples.tools,
            template=template,
        )
        conversations = [
            ([*p, {"role": "assistant", "content": r}], t)
            for p, r, t in zip(examples.prompts, examples.references, examples.tools, strict=True)
        ]
        rows = reply_rows(
            tokenizer, conversations, max_length=config.data.max_length, template=template
        )
    else:
        rows = text_rows(tokenizer, examples.texts, config.data.max_length)
    found["nll"] = row_nll(model, rows, batch_size=spec.batch_size, label=f"loss {name}")
    if examples.generative and examples.texts:  # a mixed test split: the texts' loss too
        rows = text_rows(tokenizer, examples.texts, config.data.max_length)
        found["text_nll"] = row_nll(model, rows, batch_size=spec.batch_size, label=f"text {name}")
    found.update(_suites(model, tokenizer, suites, config, name))
    return found


def _suites(
    model: Any, tokenizer: Any, suites: Suites, config: Config, name: str
) -> dict[str, Any]:
    spec, template, found = config.eval, config.data.template, {}
    if suites.passages is not None:
        from tuneforge.eval.retention import measure_retention

        found["retention"] = measure_retention(
            model,
            tokenizer,
            suites.passages,
            spec.retention,
            batch_size=spec.batch_size,
            label=name,
        )
    if suites.probes is not None:
        from tuneforge.eval.bias import run_bias_probes

        found["bias"] = run_bias_probes(
            model,
            tokenizer,
            suites.probes,
            max_new_tokens=spec.bias.max_new_tokens,
            batch_size=spec.batch_size,
            template=template,
            top_k=spec.bias.top,
        )
    if suites.red_team is not None:
        from tuneforge.eval.safety import run_safety_suite

        found["safety"] = run_safety_suite(
            model,
            tokenizer,
            suites.red_team,
            max_new_tokens=spec.safety.max_new_tokens,
            batch_size=spec.batch_size,
            template=template,
            classifier=suites.classifier,
            threshold=config.data.clean.toxicity_threshold,
            refusal_patterns=tuple(spec.safety.refusal_patterns),
        )
    return found


def _classifier(config: Config) -> Any:
    """The data layer's toxicity classifier plug-in, when one is configured."""
    from tuneforge.data.configure import toxicity_classifier

    return toxicity_classifier(config.data.clean.toxicity_classifier, config.data.folder())


def loss_values(nll: list[tuple[float, int]]) -> dict[str, float]:
    """The token-weighted reply loss and its perplexity."""
    loss = mean_nll(nll)
    return {"loss": round(loss, 4), "perplexity": round(math.exp(loss), 4)}
