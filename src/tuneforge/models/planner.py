"""Plan a run's memory and time before it starts.

Parameter counts come from the model's config alone: the model is built on the meta
device (no weights) and prepared the way :mod:`tuneforge.train.methods` prepares the
real one, so what trains, and at which dtype, is PEFT's and the trainer's own answer.
Memory is the sum of weights, gradients, AdamW state and the activations autograd keeps
for a micro-batch of ``train.batch_size`` x ``data.max_length`` tokens. :func:`measure`
checks the estimate against three real training steps.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tuneforge.config.schema import Config, MethodConfig
from tuneforge.errors import ConfigError, ModelError

KINDS = ("full", "freeze", "lora", "dora", "qlora", "ia3", "prompt", "prefix")
LORA_KINDS = ("lora", "dora", "qlora")
GIB = 1024**3
# total memory as nvidia-smi reports it, in GiB
GPUS = {
    "H100": 79.6,
    "H200": 140.4,
    "A100-40GB": 40.0,
    "A100-80GB": 80.0,
    "L4": 22.5,
    "RTX4090": 24.0,
}
CUDA_CONTEXT_GIB = 1.0  # the CUDA context and kernels take 0.5-1 GiB before any tensor
TIGHT = 0.1  # less free than this share of the GPU: allocator fragmentation may not fit
NF4_BLOCK = 64  # weights per 4-bit block, each with one absmax constant
NF4_BLOCK2 = 256  # double quant: 8-bit absmax constants per fp32 second-level constant


@dataclass(frozen=True)
class Shape:
    """The decoder dimensions the activation estimate needs."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_width: int  # num_key_value_heads x head_dim
    vocab: int


@dataclass(frozen=True)
class Prepared:
    """What training touches, read off the prepared meta model."""

    total: int
    trainable: int
    weight_bytes: int
    trainable_bytes: int
    act_size: int  # bytes per element of the hidden states (the embedding dtype)
    adapter_bytes_per_token: int  # what the adapter's own layers keep, all layers
    base_trains: bool  # the base weights of the recorded layers train (full, freeze)
    inputs_kept: bool  # linear inputs are kept: trained weights or LoRA reading them uncopied
    head_trains: bool
    recorded_layers: int  # layers autograd records (freeze: only the trained top ones)
    virtual_tokens: int  # prompt tuning lengthens every sequence


@dataclass(frozen=True)
class Estimate:
    """Memory one training process needs, in bytes, by component."""

    kind: str
    total_params: int
    trainable_params: int
    weights: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations


@dataclass(frozen=True)
class Measurement:
    """Three real training steps: seconds per step and bytes by component."""

    where: str
    dtype: torch.dtype
    step_seconds: float
    weights: int
    gradients: int
    optimizer: int
    activations: int
    peak: int


def model_config(config: Config) -> Any:
    """The base model's transformers config, read without loading weights.

    The tiny model's comes from its cached build when there is one, else from the
    same builder with ``model.tiny.vocab_size`` as the vocabulary (what the BPE
    trainer reaches on the generated corpus).

    Raises:
        ModelError: the config cannot be read (missing folder, unknown hub id offline).
    """
    from transformers import AutoConfig

    spec = config.model
    if spec.name_or_path == "tiny":
        built = tiny_base_dir(config)
        if built is None:
            from tuneforge.models.tiny import llama_config

            return llama_config(spec.tiny, _VocabOnly(spec.tiny.vocab_size))
        return AutoConfig.from_pretrained(str(built))
    try:
        return AutoConfig.from_pretrained(
            spec.name_or_path, revision=spec.revision, trust_remote_code=spec.trust_remote_code
        )
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ModelError(
            f"model.name_or_path {spec.name_or_path!r}: cannot read its config.json: {first}"
        ) from None


def tiny_base_dir(config: Config) -> Path | None:
    """The finished tiny-model build for this config under ``runs_dir``, if any."""
    from tuneforge.pipeline import Pipeline
    from tuneforge.runs import find_finished, stage_key

    # material("base") reads only the config, so no run directory is needed
    material = Pipeline(config=config, run=None, config_file="").material("base")  # type: ignore[arg-type]
    return find_finished(Path(config.runs_dir).resolve(), "base", stage_key("base", material))


def model_shape(hf_config: Any) -> Shape:
    """Decoder dimensions from a Llama-like transformers config."""
    get = hf_config.get_text_config() if hasattr(hf_config, "get_text_config") else hf_config
    heads = get.num_attention_heads
    head_dim = getattr(get, "head_dim", None) or get.hidden_size // heads
    kv_heads = getattr(get, "num_key_value_heads", None) or heads
    return Shape(
        layers=get.num_hidden_layers,
        hidden=get.hidden_size,
        intermediate=getattr(get, "intermediate_size", None) or 4 * get.hidden_size,
        heads=heads,
        kv_width=kv_heads * head_dim,
        vocab=get.vocab_size,
    )


def method_for(kind: str, method: MethodConfig, layers: int) -> MethodConfig:
    """The configured method switched to ``kind``; freeze defaults to the top quarter."""
    update: dict[str, Any] = {"kind": kind}
    if kind == "freeze" and method.train_layers is None and not method.train_modules:
        update["train_layers"] = max(1, layers // 4)
    return method.model_copy(update=update)


def plan_dtype(precision: str) -> torch.dtype:
    """The dtype a GPU run trains in: ``auto`` is bf16, what current GPUs use."""
    names = {"fp32": torch.float32, "fp16": torch.float16}
    return names.get(precision, torch.bfloat16)


def estimate(
    config: Config,
    hf_config: Any,
    dtype: torch.dtype,
    method: MethodConfig | None = None,
    on_gpu: bool = True,
) -> Estimate:
    """Memory for training ``method`` (default: ``config.method``) at ``dtype``.

    ``on_gpu`` False estimates a CPU run (its dropout keeps a full-width mask).

    Weights are every parameter at its dtype after preparation (qlora: the quantized
    linear layers at 4-bit NF4 plus their constants); gradients and torch AdamW's two
    moments are kept in each trainable parameter's dtype, with no fp32 master copy.
    """
    method = method or config.method
    prepared = prepare_meta(hf_config, method, dtype, on_gpu)
    shape = model_shape(hf_config)
    length = config.data.pack_length or config.data.max_length
    tokens = config.train.batch_size * (length + prepared.virtual_tokens)
    return Estimate(
        kind=method.kind,
        total_params=prepared.total,
        trainable_params=prepared.trainable,
        weights=prepared.weight_bytes,
        gradients=prepared.trainable_bytes,
        optimizer=2 * prepared.trainable_bytes,
        activations=activation_bytes(shape, prepared, tokens, config.train.gradient_checkpointing),
    )


def prepare_meta(
    hf_config: Any, method: MethodConfig, dtype: torch.dtype, on_gpu: bool = True
) -> Prepared:
    """Build the model on the meta device and make trainable what training would."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    from tuneforge.train import adapters
    from tuneforge.train.methods import is_peft, set_trainable

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype)
    # tying inside init_empty_weights re-creates the shared parameter, untied
    model.tie_weights()
    head = model.get_output_embeddings()
    with init_empty_weights():
        if method.kind == "qlora":
            model = adapters.prepare_kbit(model)  # upcasts what stays unquantized to fp32
        # bitsandbytes quantizes every linear layer but the output head
        quantized = {
            id(m.weight)
            for m in model.modules()
            if method.kind == "qlora" and isinstance(m, torch.nn.Linear) and m is not head
        }
        model.requires_grad_(False)
        if is_peft(method):
            model = adapters.attach_adapter(model, method)
        else:
            set_trainable(model, method)
    return _read_prepared(model, method, quantized, on_gpu)


def _read_prepared(model: Any, method: MethodConfig, quantized: set[int], on_gpu: bool) -> Prepared:
    nf4 = 0.5 + (
        1 / NF4_BLOCK + 4 / (NF4_BLOCK * NF4_BLOCK2) if method.double_quant else 4 / NF4_BLOCK
    )
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    weight_bytes = sum(
        p.numel() * nf4 if id(p) in quantized else p.numel() * p.element_size() for p in params
    )
    act_size = model.get_input_embeddings().weight.element_size()
    adapter_size = trainable[0].element_size() if trainable else act_size
    layers = model_shape(model.config).layers
    base_trains = method.kind in ("full", "freeze")
    recorded = layers
    if method.kind == "freeze" and not method.train_modules and not method.unfreeze_every:
        recorded = method.train_layers or layers
    head = model.get_output_embeddings()
    return Prepared(
        total=sum(p.numel() for p in params),
        trainable=sum(p.numel() for p in trainable),
        weight_bytes=math.ceil(weight_bytes),  # buffers (rotary tables) are negligible
        trainable_bytes=sum(p.numel() * p.element_size() for p in trainable),
        act_size=act_size,
        adapter_bytes_per_token=_adapter_bytes(
            model, method, adapter_size, act_size, 1 if on_gpu else adapter_size
        ),
        base_trains=base_trains,
        inputs_kept=base_trains
        or (method.kind in LORA_KINDS and not _lora_copies_input(method, adapter_size, act_size)),
        head_trains=head is not None and head.weight.requires_grad,
        recorded_layers=recorded,
        virtual_tokens=method.virtual_tokens if method.kind == "prompt" else 0,
    )


def _adapter_bytes(model: Any, method: MethodConfig, a: int, e: int, mask: int) -> int:
    """Bytes per token that adapter layers keep beyond the base model, over all layers.

    LoRA reads its own copy of the input (see :func:`_lora_copies_input`), plus the
    dropout mask (one byte on a GPU, an element on a CPU), and keeps its rank-r
    projection; DoRA also keeps the base output and the LoRA output for the magnitude's
    gradient; IA3 keeps what it scales (the input of feed-forward layers, else the output).
    """
    name, total = method.adapter_name, 0
    copied = _lora_copies_input(method, a, e)
    for module in model.modules():
        if name in getattr(module, "lora_A", {}):
            if copied:
                total += (a + (mask if method.dropout > 0 else 0)) * module.in_features
            total += a * module.r[name]
            if module.use_dora[name]:
                total += (e + a) * module.out_features
        elif name in getattr(module, "ia3_l", {}):
            total += a * (module.in_features if module.is_feedforward else module.out_features)
    return total


def _lora_copies_input(method: MethodConfig, a: int, e: int) -> bool:
    """Whether each LoRA layer makes its own copy of its input for backward.

    It does when it applies dropout, or when PEFT casts the input to the adapter's dtype
    (fp32 adapters on a bf16 base); otherwise it reads the base layer's input itself.
    """
    return method.dropout > 0 or a != e


def activation_bytes(shape: Shape, prepared: Prepared, tokens: int, checkpointing: bool) -> int:
    """What autograd keeps for backward for ``tokens`` tokens in one micro-batch.

    Per layer (per token, e bytes per element): RMSNorm keeps its input in fp32 (an
    upcast copy below fp32), twice; sdpa attention keeps q, k, v and its output plus an
    fp32 log-sum-exp per head; the SiLU MLP keeps gate, SiLU(gate) and up. Trained norm
    weights add their normalised input, trained (or LoRA-read) linear layers their
    inputs: the norm outputs and the MLP product. The head keeps the final norm's input,
    and the loss about three fp32 copies of the logits (the logits, their fp32 upcast and
    the log-softmax; its gradient in backward). With gradient checkpointing only each
    layer's input is kept, plus the larger of the head and one layer, which is
    recomputed in backward once the logits are freed.
    """
    h, e = shape.hidden, prepared.act_size
    layer = 2 * 4 * h + e * (2 * h + 2 * shape.kv_width) + 4 * shape.heads
    layer += 3 * e * shape.intermediate
    if prepared.base_trains:
        layer += 2 * e * h
    if prepared.inputs_kept:
        layer += 2 * e * h + e * shape.intermediate
    layer = layer * tokens + prepared.adapter_bytes_per_token * tokens // shape.layers
    head = (4 * h + (e * h if prepared.head_trains else 0) + 12 * shape.vocab) * tokens
    if checkpointing:  # a layer is recomputed in backward, once the logits are gone
        return prepared.recorded_layers * e * h * tokens + max(layer, head)
    return prepared.recorded_layers * layer + head


def gpu_gib(name: str) -> float:
    """GiB of a named GPU (``H100``, ``L4`` ...) or a size (``24GB``, ``80``).

    Raises:
        ConfigError: neither a known GPU nor a size.
    """
    known = {key.lower(): gib for key, gib in GPUS.items()}
    if name.strip().lower() in known:
        return known[name.strip().lower()]
    size = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:gi?b?)?\s*", name, re.IGNORECASE)
    if not size or float(size.group(1)) <= 0:
        raise ConfigError(f"--gpu {name!r}: expected a size like 24GB or one of {', '.join(GPUS)}")
    return float(size.group(1))


def fit(total_bytes: int, gib: float) -> tuple[bool, str]:
    """Whether ``total_bytes`` fits a GPU of ``gib`` GiB after the CUDA context, and a note."""
    free = gib - CUDA_CONTEXT_GIB - total_bytes / GIB
    if free < 0:
        return False, f"short by {-free:.1f} GiB"
    if free < TIGHT * gib:
        return True, f"tight: {free:.1f} GiB left, fragmentation may not fit"
    return True, f"{free:.1f} GiB left"


def train_rows(config: Config) -> tuple[int | None, str]:
    """Rows per epoch: the prepared train split's, else from ``data.max_samples``."""
    import pyarrow.parquet as pq

    from tuneforge.runs import latest_run

    run = latest_run(config)
    folder = "packed" if config.train.packing else "tokens"
    split = run.path / "data" / folder / "train.parquet" if run else None
    if split is not None and split.is_file():
        return pq.read_metadata(split).num_rows, "prepared train split"
    if config.data.max_samples:
        share = 1 - config.data.val_fraction - config.data.test_fraction
        return int(config.data.max_samples * share), "data.max_samples"
    return None, "unknown: no prepared data and no data.max_samples"


class _VocabOnly:
    """The tiny model's tokenizer before it is trained, as far as its config needs it.

    The config builder reads only the vocabulary size and two special-token ids.
    """

    pad_token_id = 3  # the tokenizer's special tokens come first, in a fixed order

    def __init__(self, size: int) -> None:
        self._size = size

    def __len__(self) -> int:
        return self._size

    def convert_tokens_to_ids(self, token: str) -> int:
        from tuneforge.models.tiny import SPECIAL_TOKENS

        return SPECIAL_TOKENS.index(token)
