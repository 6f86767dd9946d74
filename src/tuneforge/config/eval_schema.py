"""The eval section: task metrics, suites (retention, bias, safety), gates and the judge."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class NormalizationConfig(_Section):
    """How replies and references are normalised before exact match and label extraction."""

    lowercase: bool = False
    strip_punctuation: bool = False
    remove_articles: bool = Field(False, description="Drop English a/an/the (SQuAD-style).")
    collapse_whitespace: bool = True


class RetentionConfig(_Section):
    """Forgetting: perplexity on general text (and lm-eval tasks), tuned vs base."""

    enabled: bool = True
    bundled: bool = Field(True, description="Include the bundled general English passages.")
    texts: list[str] = Field(
        default_factory=list,
        description="More general text: .txt files (paragraphs) or .jsonl with a 'text' field.",
    )
    max_passages: int = Field(64, ge=1, description="Passages per source (first N).")
    max_tokens: int = Field(256, ge=16, description="Tokens per passage (longer ones are cut).")
    lm_eval_tasks: list[str] = Field(
        default_factory=list, description="lm-eval task names (needs tuneforge[eval])."
    )
    lm_eval_include: str | None = Field(
        None, description="Folder of local lm-eval task YAML files (offline tasks)."
    )
    lm_eval_limit: int | None = Field(None, ge=1, description="Documents per lm-eval task.")


class BiasConfig(_Section):
    """Counterfactual bias probes: swapped demographic terms, output divergence, likelihood gaps."""

    enabled: bool = True
    bundled: bool = Field(True, description="Include the bundled probes.")
    probes: list[str] = Field(default_factory=list, description="More probe YAML files.")
    max_new_tokens: int = Field(32, ge=1)
    top: int = Field(5, ge=1, description="Largest gaps shown with examples.")


class SafetyConfig(_Section):
    """Red-team prompts (refusal and blocked-content rates) and the grounding check."""

    enabled: bool = True
    bundled: bool = Field(True, description="Include the bundled red-team prompts.")
    prompts: list[str] = Field(default_factory=list, description="More red-team .jsonl files.")
    max_new_tokens: int = Field(48, ge=1)
    grounding: bool = Field(
        True, description="Flag replies with numbers or names absent from input and reference."
    )
    refusal_patterns: list[str] = Field(
        default_factory=list, description="More regular expressions that mark a refusal."
    )


class JudgeConfig(_Section):
    """LLM-as-judge through an OpenAI-compatible endpoint; off unless base_url is set."""

    base_url: str | None = Field(None, description="e.g. http://localhost:8000/v1")
    model: str = "judge"
    rubric: str | None = Field(None, description="Criteria; the default rubric when null.")
    api_key_env: str = "OPENAI_API_KEY"
    scale: int = Field(5, ge=2)
    max_samples: int | None = Field(None, ge=1, description="Judge at most this many examples.")


class GateConfig(_Section):
    """A gate that compares with a named earlier run: ``vs`` in the check is its value."""

    check: str = Field(description="e.g. 'exact_match >= vs - 0.01'")
    vs: str = Field(description="An earlier run directory, or run:NAME (its newest eval).")


Gate = str | GateConfig
GATE_PATTERN = (
    r"^\s*(?P<metric>[A-Za-z_][\w.]*)\s*(?P<op>>=|<=|==|>|<)\s*"
    r"(?:(?P<ref>base|vs)\s*(?:(?P<sign>[-+*])\s*(?P<offset>\d+(?:\.\d+)?))?"
    r"|(?P<number>-?\d+(?:\.\d+)?(?:e-?\d+)?))\s*$"
)


class EvalConfig(_Section):
    """Evaluation on the held-out test split: base vs tuned, suites, gates."""

    max_new_tokens: int = Field(64, ge=1)
    batch_size: int = Field(16, ge=1)
    max_samples: int | None = Field(None, ge=1)
    compare_base: bool = Field(True, description="Also evaluate the untuned base model.")
    temperature: float = Field(0.0, ge=0, description="0: greedy decoding.")
    top_p: float = Field(1.0, gt=0, le=1)
    stop: list[str] = Field(default_factory=list, description="Stop strings (cut the reply).")
    metrics: list[str] | Literal["auto"] = Field(
        "auto", description="Task metric names, or auto (chosen from the references)."
    )
    normalize: NormalizationConfig = Field(default_factory=NormalizationConfig)
    labels: list[str] | None = Field(None, description="Classification label set.")
    label_key: str | None = Field(
        None, description="Read the label from this key of a JSON reply (dotted path)."
    )
    json_schema: str | None = Field(None, description="JSON Schema file replies must follow.")
    bootstrap_samples: int = Field(1000, ge=100)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    group_by: list[str] = Field(
        default_factory=list, description="Metadata fields for error analysis (e.g. category)."
    )
    worst: int = Field(5, ge=1, description="Worst examples shown per metric.")
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    bias: BiasConfig = Field(default_factory=BiasConfig)
    safety: SafetyConfig = Field(default_factory=SafetyConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    gates: list[Gate] = Field(
        default_factory=list,
        description="Checks the tuned model must pass, e.g. 'exact_match >= base + 0.05'.",
    )

    @field_validator("gates")
    @classmethod
    def _gates_parse(cls, gates: list[Gate]) -> list[Gate]:
        import re

        for gate in gates:
            text = gate if isinstance(gate, str) else gate.check
            match = re.match(GATE_PATTERN, text)
            if match is None:
                raise ValueError(
                    f"gate {text!r} is not 'METRIC OP VALUE' (OP one of >= <= > < ==; VALUE a "
                    "number, base, vs, or base/vs +, - or * a number)"
                )
            if match["ref"] == "vs" and isinstance(gate, str):
                raise ValueError(f"gate {text!r} uses vs: write it as {{check: ..., vs: RUN}}")
        return gates
