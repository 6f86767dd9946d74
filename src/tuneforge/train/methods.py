"""How weights are adapted: build the model a training recipe trains, and load what it saved.

Every ``method.kind`` goes through the same five calls, so recipes never branch on it:

- :func:`prepare_model` loads the base (4-bit for qlora), merges ``method.base_adapters``
  into it, and makes exactly the method's parameters trainable;
- :func:`optimizer_parameters` is what the optimizer holds;
- :func:`update_unfreezing` is called after every optimizer step (gradual unfreezing);
- :func:`save_trained` writes ``adapter/`` (PEFT kinds) or ``model/`` (full, freeze);
- :func:`load_trained` rebuilds the trained model from that folder, for eval and export.

PEFT itself is only touched through :mod:`tuneforge.train.adapters`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tuneforge.config.schema import Config, MethodConfig
from tuneforge.errors import ConfigError, ModelError
from tuneforge.models.load import load_model
from tuneforge.train import adapters

PEFT_KINDS = frozenset({"lora", "dora", "qlora", "ia3", "prompt", "prefix"})
MERGEABLE_KINDS = frozenset({"lora", "dora", "qlora", "ia3"})


def is_peft(method: MethodConfig) -> bool:
    """True when ``method.kind`` trains a PEFT adapter rather than the model's own weights."""
    return method.kind in PEFT_KINDS


def prepare_model(
    model_path: str, config: Config, dtype: torch.dtype, device: torch.device
) -> torch.nn.Module:
    """The model to train: base, plus merged base adapters, with the method applied.

    Args:
        model_path: The base model (hub id or folder).
        config: The whole config; ``config.model`` says how to load, ``config.method`` what trains.
        dtype: Weight dtype (qlora: compute dtype on a GPU; fp32 on CPU).
        device: Where the model goes.

    Returns:
        full: the model, every parameter trainable. freeze: the model, only the top
        ``method.train_layers`` decoder layers and parameters named by
        ``method.train_modules`` trainable. PEFT kinds: a PEFT model whose only trainable
        parameters are the new adapter ``method.adapter_name``.

    Raises:
        ConfigError: the method does not fit the model (too many layers, unknown modules).
        ModelError: the base or a base adapter cannot be loaded.
    """
    method = config.method
    model = load_base(model_path, config, dtype, device)
    if is_peft(method):
        return adapters.attach_adapter(model, method)
    set_trainable(model, method)
    return model


def load_base(
    model_path: str,
    config: Config,
    dtype: torch.dtype,
    device: torch.device,
    *,
    quantize: bool | None = None,
) -> torch.nn.Module:
    """The frozen starting point: the base model with ``method.base_adapters`` merged in, in order.

    Args:
        model_path: The base model (hub id or folder).
        config: The whole config.
        dtype: Weight dtype.
        device: Where the model goes.
        quantize: Load 4-bit NF4; default: when ``method.kind`` is qlora.

    Raises:
        ModelError: the base cannot be loaded, or a base adapter folder is not a
            safetensors PEFT adapter that fits it.
    """
    method, spec = config.method, config.model
    folders = [adapters.check_adapter_dir(f, "method.base_adapters") for f in method.base_adapters]
    quantize = method.kind == "qlora" if quantize is None else quantize
    model = load_model(
        model_path,
        dtype=dtype,
        revision=spec.revision,
        trust_remote_code=spec.trust_remote_code,
        device=device,
        quantize=quantize,
        double_quant=method.double_quant,
        **head_options(model_path, config),
    )
    # on a 4-bit base the merge dequantizes, adds and re-quantizes each weight:
    # deterministic, so training, eval and a reload all see the same base
    model = adapters.merge_adapter_dirs(model, folders)
    if quantize:
        model = adapters.prepare_kbit(model)
    model.requires_grad_(False)
    return model


def head_options(model_path: str, config: Config) -> dict[str, Any]:
    """``load_model`` options for the objective's head: a score head for a reward model."""
    if config.objective != "reward":
        return {}
    from tuneforge.models.load import load_tokenizer

    spec = config.model
    tokenizer = load_tokenizer(
        model_path, revision=spec.revision, trust_remote_code=spec.trust_remote_code
    )
    return {"head": "score", "pad_token_id": tokenizer.pad_token_id}


def optimizer_parameters(model: torch.nn.Module, method: MethodConfig) -> list[torch.nn.Parameter]:
    """The parameters the optimizer should hold, in a fixed order.

    With gradual unfreezing the layers that will be unfrozen later are included from
    the start: AdamW skips parameters whose ``grad`` is None, so they do not move
    (not even by weight decay) while frozen, as long as the loop zeroes gradients with
    ``set_to_none=True``.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if method.kind == "freeze" and method.unfreeze_every:
        seen = {id(p) for p in params}
        for param in decoder_layers(model).parameters():
            if id(param) not in seen:
                seen.add(id(param))
                params.append(param)
    return params


def update_unfreezing(model: torch.nn.Module, method: MethodConfig, step: int) -> int | None:
    """Gradual unfreezing: one more trained decoder layer every ``unfreeze_every`` steps.

    The trained layers are the top ``train_layers + step // unfreeze_every`` decoder
    layers (at most all of them); the count is recomputed from ``step``, so a resumed
    run lands in the same state.

    Returns:
        The new number of trained decoder layers when it changed, else None.
    """
    if method.kind != "freeze" or not method.unfreeze_every:
        return None
    layers = decoder_layers(model)
    wanted = min(len(layers), (method.train_layers or 0) + step // method.unfreeze_every)
    if wanted <= trained_top_layers(model):
        return None
    for layer in layers[len(layers) - wanted :]:
        layer.requires_grad_(True)
    return wanted


def trained_top_layers(model: torch.nn.Module) -> int:
    """How many decoder layers, counted from the top, train in full."""
    count = 0
    for layer in reversed(decoder_layers(model)):
        if not all(p.requires_grad for p in layer.parameters()):
            break
        count += 1
    return count


def decoder_layers(model: torch.nn.Module, key: str = "method.train_layers") -> torch.nn.ModuleList:
    """The model's stack of transformer blocks, found as the list of ``num_hidden_layers`` modules.

    Raises:
        ModelError: no such list (an architecture that does not say its depth).
    """
    count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if count:
        for module in model.modules():
            if isinstance(module, torch.nn.ModuleList) and len(module) == count:
                return module
    raise ModelError(
        f"{key}: cannot find the decoder layers of {type(model).__name__} (no list of "
        "config.num_hidden_layers blocks); name what to train with method.train_modules"
    )


def save_trained(model: torch.nn.Module, method: MethodConfig, out_dir: Path) -> str:
    """Save what training changed, as safetensors, and return the folder's name in ``out_dir``.

    PEFT kinds write only the adapter (flat, loadable under any name) to ``adapter/``;
    full and freeze write the whole model to ``model/`` (frozen weights included, so the
    folder is an ordinary model a server or converter can load).
    """
    if is_peft(method):
        adapters.save_adapter(model, Path(out_dir) / "adapter", method.adapter_name)
        return "adapter"
    model.save_pretrained(Path(out_dir) / "model", safe_serialization=True)
    return "model"


def load_trained(
    model_path: str,
    config: Config,
    train_dir: Path,
    dtype: torch.dtype,
    device: torch.device,
    *,
    trainable: bool = False,
    quantize: bool | None = None,
) -> torch.nn.Module:
    """The model as trained, rebuilt from what :func:`save_trained` wrote into ``train_dir``.

    Args:
        model_path: The base model (hub id or folder) the run trained on.
        config: The run's config.
        train_dir: The train stage's folder.
        dtype: Weight dtype.
        device: Where the model goes.
        trainable: Make the method's parameters trainable again (else eval mode, all frozen).
        quantize: PEFT kinds: load the base 4-bit; default: as trained. Export passes
            False to merge a qlora adapter onto the unquantized base.

    Raises:
        ModelError: ``train_dir`` holds no saved adapter or model for ``method.kind``.
    """
    method = config.method
    if is_peft(method):
        folder = adapters.check_adapter_dir(Path(train_dir) / "adapter", "train output")
        base = load_base(model_path, config, dtype, device, quantize=quantize)
        model = adapters.load_adapter(base, folder, name=method.adapter_name, trainable=trainable)
    else:
        folder = Path(train_dir) / "model"
        if not (folder / "config.json").is_file():
            raise ModelError(
                f"train output {str(folder)!r}: no saved model for method.kind {method.kind!r}; "
                "run `tuneforge train` first"
            )
        head = head_options(model_path, config)
        model = load_model(str(folder), dtype=dtype, device=device, **head)
        if trainable:
            set_trainable(model, method)
    if not trainable:
        model.requires_grad_(False)  # PEFT leaves a prompt-learning adapter trainable
    model.train(trainable)
    return model


def sequence_logits(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Logits aligned with ``input_ids``, for every method.

    Prompt tuning prepends its virtual tokens to the input, so PEFT returns logits
    for them too; they are dropped here so that position ``i`` predicts token ``i + 1``.
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return logits[:, logits.shape[1] - input_ids.shape[1] :]


def set_trainable(model: torch.nn.Module, method: MethodConfig) -> None:
    if method.kind == "full":
        model.requires_grad_(True)
        return
    model.requires_grad_(False)
    if method.train_layers:
        layers = decoder_layers(model)
        if method.train_layers > len(layers):
            raise ConfigError(
                f"method.train_layers {method.train_layers}: the model has only {len(layers)} "
                "decoder layers"
            )
        for layer in layers[len(layers) - method.train_layers :]:
            layer.requires_grad_(True)
    _train_named(model, method.train_modules)


def _train_named(model: torch.nn.Module, patterns: list[str]) -> None:
    """Unfreeze parameters whose name contains a pattern; every pattern must match one."""
    matched: set[str] = set()
    # tied weights are listed under each name, so 'lm_head' finds a head tied to the embeddings
    for name, param in model.named_parameters(remove_duplicate=False):
        hits = [p for p in patterns if p in name]
        if hits:
            param.requires_grad_(True)
            matched.update(hits)
    unmatched = [p for p in patterns if p not in matched]
    if unmatched:
        example = next(iter(dict(model.named_parameters())), "")
        raise ConfigError(
            f"method.train_modules {unmatched}: no parameter name contains it "
            f"(names look like {example!r})"
        )
