"""The one typed config: one section per stage, unknown keys are errors.

Defaults follow common practice from the LoRA/QLoRA papers and the peer tools;
models and data have none (the user must name them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tuneforge.config.eval_schema import EvalConfig
from tuneforge.config.mix_schema import (
    ChunkingConfig,
    DataFormat,
    MixConfig,
    SourceConfig,
    check_mixture,
)
from tuneforge.config.serve_schema import ServeConfig
from tuneforge.config.service_schema import ServiceConfig
from tuneforge.config.synth_schema import SynthConfig
from tuneforge.config.track_schema import TrackConfig
from tuneforge.config.tune_schema import TuneConfig


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, values are checked."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TinyModelConfig(Section):
    """Shape and pre-training budget of the project's own tiny Llama model."""

    vocab_size: int = Field(2048, ge=300, description="BPE vocabulary size.")
    hidden_size: int = Field(128, ge=16)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(352, ge=16)
    max_position_embeddings: int = Field(512, ge=64)
    corpus_paragraphs: int = Field(3000, ge=10, description="Generated prose paragraphs.")
    corpus_dialogues: int = Field(1200, ge=10, description="Generated chat dialogues.")
    pretrain_steps: int = Field(400, ge=0, description="Steps of pre-training (0: random).")
    pretrain_batch_size: int = Field(16, ge=1)
    pretrain_seq_len: int = Field(128, ge=16)
    pretrain_lr: float = Field(3e-3, gt=0)


class ModelConfig(Section):
    """Which base model to load, and how."""

    name_or_path: str = Field(
        description="Hub id (org/name), local directory, or 'tiny' to build the project's "
        "tiny model (cached in the runs directory)."
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    trust_remote_code: bool = Field(False, description="Run model code shipped with the model.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 where the hardware really supports it, else fp32."
    )
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig)


class CleanConfig(Section):
    """Normalisation and quality filters; a threshold of null switches its rule off."""

    normalize: bool = Field(True, description="NFC, line endings, control characters.")
    strip_html: bool = Field(False, description="Remove HTML tags, keep their text.")
    min_chars: int | None = Field(1, ge=0)
    max_chars: int | None = Field(None, ge=1)
    max_duplicate_line_ratio: float | None = Field(0.5, ge=0, le=1)
    max_symbol_ratio: float | None = Field(0.5, ge=0, le=1)
    max_repeated_ngram_ratio: float | None = Field(0.7, ge=0, le=1)
    languages: list[str] | None = Field(None, description="Keep only these (e.g. [en, de]).")
    max_profanity: int | None = Field(None, ge=0, description="Profane words allowed per sample.")
    wordlists: list[str] = Field(default_factory=list, description="Extra word-list files.")
    toxicity_classifier: str | None = Field(
        None,
        description="module:function scoring a text's toxicity in [0, 1] (your classifier), "
        "e.g. my_filters:score: a .py file in the data's folder, or an importable module.",
    )
    toxicity_threshold: float = Field(0.5, ge=0, le=1, description="Drop at or above this score.")


class DedupConfig(Section):
    """Exact and near-duplicate removal (MinHash + LSH); the first occurrence is kept."""

    exact: bool = True
    near: bool = True
    threshold: float = Field(0.8, gt=0, le=1, description="Jaccard similarity.")
    num_perm: int = Field(128, ge=16)
    shingle: Literal["word", "char"] = "word"
    shingle_size: int = Field(5, ge=1)


class PiiConfig(Section):
    """Personal data and secrets: redact with typed placeholders, drop, flag, or off."""

    mode: Literal["redact", "drop", "flag", "off"] = "redact"
    types: list[str] | None = Field(
        None, description="Only these types (e.g. [email, phone]); all structured types if null."
    )
    presidio: bool = Field(
        False, description="Also find names and locations with presidio-analyzer (installed)."
    )
    presidio_entities: list[str] = Field(
        default_factory=lambda: ["PERSON", "LOCATION"], description="Presidio entity types."
    )


class DecontaminateConfig(Section):
    """Training samples sharing a long n-gram with eval data or benchmarks."""

    mode: Literal["drop", "flag", "off"] = "drop"
    ngram: int = Field(13, ge=4)
    benchmarks: list[str] = Field(default_factory=list, description="Extra files to guard.")


class DataConfig(Section):
    """Where the training data is and how to split and render it.

    The data is one dataset (``path``) or a mixture of several (``sources``, sampled
    as ``mix`` says); exactly one of the two is given.
    """

    path: str | None = Field(
        None,
        description="Dataset file or folder (JSON, JSONL, CSV, Parquet, TXT, datasets), "
        "relative to the config file; or give sources.",
    )
    sources: list[SourceConfig] | None = Field(
        None, description="Several datasets mixed into one training set, instead of path."
    )
    mix: MixConfig = Field(default_factory=MixConfig)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    format: DataFormat = "auto"
    mapping: dict[str, str] = Field(
        default_factory=dict, description="Our field name -> your column, e.g. {instruction: q}."
    )
    system_prompt: str | None = Field(None, description="System message added to alpaca data.")
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.1, ge=0, lt=1)
    max_length: int = Field(512, ge=8, description="Tokens per sample; longer ones are cut.")
    train_on: Literal["assistant", "last_assistant", "all"] = Field(
        "assistant", description="Which tokens carry loss (per-message weight 0 always excludes)."
    )
    template: Literal["chatml", "llama-3", "alpaca"] | None = Field(
        None, description="Chat template to use instead of (or where there is no) model template."
    )
    packing: bool = Field(True, description="Also write packed rows (packed/<split>.parquet).")
    pack_length: int | None = Field(
        None, ge=8, description="Tokens per packed row; at least max_length (default: max_length)."
    )
    max_samples: int | None = Field(None, ge=1, description="Use only the first N records.")
    strict: bool = Field(False, description="Stop at the first malformed record.")
    engine: Literal["local", "spark"] = Field("local", description="Where the steps run.")
    spark_master: str = Field("local[2]", description="local[N], spark://host:port, or yarn.")
    spark_partitions: int | None = Field(None, ge=1)
    clean: CleanConfig = Field(default_factory=CleanConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    pii: PiiConfig = Field(default_factory=PiiConfig)
    decontaminate: DecontaminateConfig = Field(default_factory=DecontaminateConfig)

    @field_validator("pack_length")
    @classmethod
    def _rows_hold_every_sample(cls, value: int | None, info) -> int | None:
        max_length = info.data.get("max_length", 512)
        if value is not None and value < max_length:
            raise ValueError(
                f"pack_length {value} is shorter than max_length {max_length}: "
                "samples would not fit in a row"
            )
        return value

    @field_validator("test_fraction")
    @classmethod
    def _fractions_leave_training_data(cls, value: float, info) -> float:
        if value + info.data.get("val_fraction", 0.0) >= 0.9:
            raise ValueError("val_fraction + test_fraction must stay below 0.9")
        return value

    @model_validator(mode="after")
    def _one_dataset_or_a_mixture(self) -> DataConfig:
        check_mixture(self.path, self.sources, self.mix, self.max_samples)
        return self

    def input_paths(self) -> list[str]:
        """The dataset files or folders read: ``path``, or each source's, in order."""
        if self.sources is not None:
            return [source.path for source in self.sources]
        return [self.path] if self.path is not None else []

    def folder(self) -> Path:
        """Where data-side files (word lists, benchmarks, classifiers) are looked up.

        The folder of ``path``, or of the first source of a mixture.
        """
        return Path(self.input_paths()[0]).parent

    def describe(self) -> str:
        """The data as error messages name it: ``data.path '...'`` or the sources' names."""
        if self.sources is not None:
            return "data.sources (" + ", ".join(s.name for s in self.sources) + ")"
        return f"data.path {self.path!r}"


class MethodConfig(Section):
    """How weights are adapted: all of them, some layers, or a PEFT adapter."""

    kind: Literal["full", "freeze", "lora", "dora", "qlora", "ia3", "prompt", "prefix"] = Field(
        "lora",
        description="full: every weight; freeze: top layers or named modules; lora/dora/qlora/"
        "ia3/prompt/prefix: a PEFT adapter (qlora: LoRA on a 4-bit NF4 base).",
    )
    r: int = Field(16, ge=1, description="LoRA rank (lora, dora, qlora).")
    alpha: float = Field(32.0, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Modules that get an adapter (lora, dora, qlora, ia3)."
    )
    rslora: bool = Field(False, description="Rank-stabilised LoRA: scale = alpha / sqrt(r).")
    double_quant: bool = Field(True, description="qlora: quantize the quantization constants.")
    virtual_tokens: int = Field(16, ge=1, description="prompt/prefix: learned tokens.")
    train_layers: int | None = Field(
        None, ge=1, description="freeze: train only the top N transformer layers."
    )
    train_modules: list[str] = Field(
        default_factory=list,
        description="freeze: also train parameters whose name contains one of these.",
    )
    unfreeze_every: int | None = Field(
        None, ge=1, description="freeze: unfreeze one more layer (downwards) every N steps."
    )
    adapter_name: str = Field(
        "default",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
        description="Name of the adapter this run trains.",
    )
    base_adapters: list[str] = Field(
        default_factory=list,
        description="Adapter folders already on the base; merged in before training "
        "(train adapter B on a base that carries adapter A).",
    )

    @model_validator(mode="after")
    def _freeze_needs_a_choice(self) -> MethodConfig:
        if self.kind == "freeze" and self.train_layers is None and not self.train_modules:
            raise ValueError("method.kind freeze needs train_layers or train_modules")
        return self


class ReplayConfig(Section):
    """General-domain data mixed into each epoch against catastrophic forgetting."""

    path: str | None = Field(None, description="Chat or text dataset, relative to the config.")
    fraction: float = Field(
        0.0, ge=0, lt=1, description="Share of each epoch's samples that come from replay data."
    )


class TrainConfig(Section):
    """Optimisation, evaluation during training, checkpoints."""

    epochs: float = Field(3.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="Overrides epochs when set.")
    lr: float = Field(2e-4, gt=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    batch_size: int = Field(8, ge=1, description="Samples (or packed rows) per micro-batch.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    packing: bool = Field(False, description="Train on the data stage's packed rows.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations: less memory.")
    eval_every: int | None = Field(None, ge=1, description="Validation loss every N steps.")
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop after this many evaluations without a better val loss."
    )
    save_every: int | None = Field(None, ge=1, description="Checkpoint every N steps.")
    keep_checkpoints: int = Field(2, ge=1, description="Newest checkpoints kept (plus the best).")
    on_nan: Literal["stop", "skip"] = Field(
        "stop", description="A NaN/Inf loss stops training, or its batch is skipped."
    )
    replay: ReplayConfig = Field(default_factory=ReplayConfig)

    @model_validator(mode="after")
    def _patience_needs_evaluations(self) -> TrainConfig:
        if self.early_stopping_patience is not None and self.eval_every is None:
            raise ValueError("train.early_stopping_patience needs train.eval_every")
        return self


PREFERENCE_OBJECTIVES = ("reward", "dpo", "orpo", "kto", "simpo")
RL_OBJECTIVES = ("grpo", "rloo")
Objective = Literal["sft", "pretrain", "reward", "dpo", "orpo", "kto", "simpo", "grpo", "rloo"]


class PreferenceConfig(Section):
    """Reward-model and offline preference objectives (defaults from the papers)."""

    beta: float | None = Field(
        None,
        gt=0,
        description="Strength of the preference term; null: the method's default "
        "(dpo/kto 0.1, orpo 0.1, simpo 2.0).",
    )
    loss: Literal["sigmoid", "ipo", "hinge"] = Field(
        "sigmoid", description="DPO variant: sigmoid (DPO), ipo (IPO), hinge (SLiC)."
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, description="Assumed share of flipped labels (conservative DPO)."
    )
    margin: float = Field(
        0.0,
        description="Reward model: the chosen score must beat the rejected one by this much "
        "(added to a pair's own 'margin' field when it has one).",
    )
    simpo_gamma: float = Field(0.5, ge=0, description="SimPO target margin over beta.")
    desirable_weight: float = Field(1.0, gt=0, description="KTO weight of desirable samples.")
    undesirable_weight: float = Field(1.0, gt=0, description="KTO weight of undesirable samples.")
    sft_weight: float = Field(
        0.0, ge=0, description="Add this times the chosen replies' NLL (dpo, simpo)."
    )


class RLConfig(Section):
    """Online RL (grpo, rloo): sample completions, score them, push the policy up the reward."""

    reward_model: str | None = Field(
        None, description="A trained reward model: a folder, or run:NAME for a run's export."
    )
    reward_functions: list[str] = Field(
        default_factory=list,
        description="Python rewards as module:function (a .py beside the config or importable); "
        "each gets (prompts, completions[, references=...]) and returns one float per completion.",
    )
    reward_weights: list[float] | None = Field(
        None, description="Weights of reward_model then reward_functions (default: all 1)."
    )
    num_generations: int = Field(4, ge=2, description="Completions sampled per prompt.")
    max_new_tokens: int = Field(48, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    kl_coef: float = Field(0.04, ge=0, description="Weight of the KL penalty to the reference.")
    clip: float = Field(0.2, gt=0, description="PPO-style ratio clipping epsilon.")
    updates_per_batch: int = Field(
        1,
        ge=1,
        description="Optimizer steps on each batch of completions (ratio clipping "
        "matters from the second on).",
    )
    eval_prompts: int = Field(32, ge=1, description="Held-out prompts scored before and after.")

    @model_validator(mode="after")
    def _weights_match(self) -> RLConfig:
        sources = int(self.reward_model is not None) + len(self.reward_functions)
        if self.reward_weights is not None and len(self.reward_weights) != sources:
            raise ValueError(
                f"rl.reward_weights has {len(self.reward_weights)} values for {sources} "
                "rewards (reward_model, then each of reward_functions)"
            )
        return self


ExportFormat = Literal["hf", "adapter", "gguf", "onnx", "ollama"]


class ExportConfig(Section):
    """What the export stage writes."""

    formats: list[ExportFormat] = Field(
        default_factory=lambda: ["hf", "adapter"],
        min_length=1,
        description="hf: merged safetensors folder; adapter: the PEFT adapter alone; gguf: "
        "llama.cpp files (one per gguf_quants); onnx: onnxruntime folder; ollama: a Modelfile "
        "over the GGUF (implies gguf).",
    )
    gguf_quants: list[Literal["f16", "q8_0", "bf16", "f32"]] = Field(
        default_factory=lambda: ["q8_0"], description="GGUF weight types, one file each."
    )
    verify: bool = Field(
        True, description="Load every artifact back with an independent reader and compare logits."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Weights of the merged model (merging is done in fp32); auto: the base "
        "model's dtype from its config.json, else float32.",
    )
    qlora_base: Literal["dequantized", "original"] = Field(
        "dequantized",
        description="Merge a qlora adapter onto the 4-bit base it trained with, dequantized "
        "(the model exactly as evaluated), or onto the original full-precision weights.",
    )
    license: str | None = Field(
        None, description="Licence of the tuned model for the card: an SPDX id or 'other'."
    )
    license_name: str | None = Field(None, description="With license: other, its name.")
    license_link: str | None = Field(None, description="With license: other, a link to it.")
    intended_use: str | None = Field(None, description="Who should use the model, for what.")
    limitations: list[str] = Field(
        default_factory=list, description="Known limitations, added to the card's own findings."
    )


class Config(Section):
    """A whole tuneforge project."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="Run name.")
    seed: int = 42
    runs_dir: str = Field("runs", description="Root of run directories (relative to the CWD).")
    model: ModelConfig
    data: DataConfig
    method: MethodConfig = Field(default_factory=MethodConfig)
    objective: Objective = Field(
        "sft",
        description="sft: chat, loss on replies; pretrain: raw text; reward: a reward model on "
        "preference pairs; dpo/orpo/simpo: pairs; kto: unpaired (or pairs); grpo/rloo: online RL.",
    )
    preference: PreferenceConfig = Field(default_factory=PreferenceConfig)
    rl: RLConfig = Field(default_factory=RLConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    track: TrackConfig = Field(default_factory=TrackConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    synth: SynthConfig = Field(default_factory=SynthConfig)

    @model_validator(mode="after")
    def _supported_combinations(self) -> Config:
        if self.method.kind == "prefix" and self.train.gradient_checkpointing:
            raise ValueError(
                "method.kind prefix does not work with train.gradient_checkpointing "
                "(PEFT's prefix cache breaks recomputation); turn one of them off"
            )
        rewards = self.rl.reward_model or self.rl.reward_functions
        if self.objective in RL_OBJECTIVES and not rewards:
            raise ValueError(
                f"objective {self.objective} needs rl.reward_model and/or rl.reward_functions"
            )
        if self.train.packing and self.objective not in ("sft", "pretrain"):
            raise ValueError(
                f"train.packing is for sft and pretrain; objective {self.objective} compares "
                "whole sequences, so turn packing off"
            )
        if self.method.kind in ("prompt", "prefix") and self.train.packing:
            raise ValueError(
                f"method.kind {self.method.kind} does not work with train.packing "
                "(virtual tokens cannot follow a block-diagonal mask); turn packing off"
            )
        return self
