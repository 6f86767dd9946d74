"""The one module that touches PEFT: build, attach, merge, load, combine and save adapters.

Adapter folders are always the flat PEFT layout (``adapter_config.json`` and
``adapter_model.safetensors`` side by side), whatever the adapter's name, so any
folder tuneforge writes can be loaded by any tool under any name.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from tuneforge.config.schema import MethodConfig
from tuneforge.errors import ConfigError, ModelError

ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
# PEFT matches weight names by these prefixes; an adapter name inside one can make a
# load silently re-initialise the adapter
PEFT_WEIGHT_PREFIXES = ("lora_", "ia3_", "prompt_tuning_", "prefix_tuning_")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
PEFT_TYPE_KINDS = {
    "LORA": "lora",
    "IA3": "ia3",
    "PROMPT_TUNING": "prompt",
    "PREFIX_TUNING": "prefix",
}
# IA3 rescales keys, values and the feed-forward output (the paper's choice); PEFT
# knows these per architecture when given none, a user's list needs the feed-forward
# ones named
FEEDFORWARD_NAMES = ("down_proj", "fc2", "fc_out", "dense_4h_to_h", "w2", "c_proj")


def check_adapter_name(name: str, key: str = "adapter name") -> str:
    """Return ``name`` if it is a safe adapter name (it becomes a folder and weight keys).

    Raises:
        ConfigError: the name could escape a folder, is not a plain identifier, or is
            part of a PEFT weight prefix (such as "a" or "lora").
    """
    if not isinstance(name, str) or not ADAPTER_NAME.match(name):
        raise ConfigError(
            f"{key} {name!r}: use letters, digits, '_' or '-' (at most 64, starting with a "
            "letter or digit)"
        )
    if any(name in prefix for prefix in PEFT_WEIGHT_PREFIXES):
        raise ConfigError(
            f"{key} {name!r}: PEFT mistakes names inside its weight prefixes "
            f"({', '.join(PEFT_WEIGHT_PREFIXES)}) for them when loading; pick another name"
        )
    return name


def check_adapter_dir(folder: str | Path, key: str = "adapter") -> Path:
    """Return ``folder`` if it holds a PEFT adapter saved as safetensors.

    Raises:
        ModelError: the folder is missing or lacks the config or the safetensors weights.
    """
    path = Path(folder).expanduser()
    missing = [name for name in ADAPTER_FILES if not (path / name).is_file()]
    if not path.is_dir() or missing:
        what = "directory not found" if not path.is_dir() else f"no {', '.join(missing)}"
        raise ModelError(f"{key} {str(path)!r}: {what}; expected a PEFT adapter folder")
    return path


def peft_config(method: MethodConfig, task_type: str = "CAUSAL_LM") -> Any:
    """The PEFT config for a PEFT ``method.kind`` (lora, dora, qlora, ia3, prompt, prefix).

    ``task_type`` ``SEQ_CLS`` (a reward model) also trains and saves the score head.
    """
    if method.kind in ("lora", "dora", "qlora"):
        return _peft().LoraConfig(
            r=method.r,
            lora_alpha=method.alpha,
            lora_dropout=method.dropout,
            target_modules=method.target_modules,
            use_dora=method.kind == "dora",
            use_rslora=method.rslora,
            task_type=task_type,
        )
    if method.kind == "ia3":
        if method.target_modules == "all-linear":
            return _peft().IA3Config(task_type=task_type)  # PEFT's per-architecture defaults
        feedforward = [m for m in method.target_modules if m in FEEDFORWARD_NAMES]
        return _peft().IA3Config(
            target_modules=method.target_modules,
            feedforward_modules=feedforward,
            task_type=task_type,
        )
    if method.kind == "prompt":
        return _peft().PromptTuningConfig(
            num_virtual_tokens=method.virtual_tokens, task_type=task_type
        )
    if method.kind == "prefix":
        return _peft().PrefixTuningConfig(
            num_virtual_tokens=method.virtual_tokens, task_type=task_type
        )
    raise ConfigError(f"method.kind {method.kind!r}: not a PEFT adapter kind")


def attach_adapter(model: Any, method: MethodConfig) -> Any:
    """Wrap ``model`` with a fresh adapter named ``method.adapter_name``; only it trains."""
    name = check_adapter_name(method.adapter_name, "method.adapter_name")
    try:
        config = peft_config(method, task_type(model))
        peft_model = _peft().get_peft_model(model, config, adapter_name=name)
    except ValueError as err:
        raise ConfigError(
            f"method.target_modules {method.target_modules!r}: {_first(err)}"
        ) from None
    return _keep_prefix_in_generation(peft_model)


def task_type(model: Any) -> str:
    """PEFT's task type: SEQ_CLS for a sequence scorer (a reward model), else CAUSAL_LM."""
    return "SEQ_CLS" if type(model).__name__.endswith("ForSequenceClassification") else "CAUSAL_LM"


def prepare_kbit(model: Any) -> Any:
    """Freeze a 4-bit model and upcast its non-quantized weights, as QLoRA training needs.

    Gradient checkpointing is left to the training loop (``train.gradient_checkpointing``).
    """
    return _peft().prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def merge_adapter_dirs(model: Any, folders: list[Path], key: str = "method.base_adapters") -> Any:
    """Fold each saved adapter, in order, into the weights of a plain model.

    Raises:
        ModelError: a folder holds a prompt/prefix adapter (nothing to merge) or does not fit.
    """
    for folder in folders:
        folder = check_adapter_dir(folder, key)
        config = _peft().PeftConfig.from_pretrained(str(folder))
        if config.is_prompt_learning:
            raise ModelError(
                f"{key} {str(folder)!r}: a {config.peft_type.value} adapter has no weights to "
                "merge into the base; only LoRA/DoRA/IA3 adapters can be"
            )
        try:
            wrapped = _peft().PeftModel.from_pretrained(model, str(folder), adapter_name="base")
        except (RuntimeError, ValueError, KeyError) as err:
            raise ModelError(
                f"{key} {str(folder)!r}: does not fit the base: {_first(err)}"
            ) from None
        model = wrapped.merge_and_unload()
    return model


def load_adapter(
    model: Any, adapter_dir: str | Path, *, name: str = "default", trainable: bool = False
) -> Any:
    """Put a saved adapter (safetensors) on a base model under ``name``."""
    folder = check_adapter_dir(adapter_dir)
    check_adapter_name(name)
    peft_model = _peft().PeftModel.from_pretrained(
        model, str(folder), adapter_name=name, is_trainable=trainable
    )
    return _keep_prefix_in_generation(peft_model)


def load_adapters(model: Any, folders: Mapping[str, str | Path], *, trainable: bool = False) -> Any:
    """Load several named adapters onto one base; the first one loaded is active.

    Args:
        model: A plain model, or a PEFT model already carrying adapters.
        folders: Adapter name -> adapter folder.
        trainable: Load the adapters' weights with ``requires_grad``.

    Raises:
        ConfigError: a name is unsafe or already loaded.
        ModelError: a folder is not a safetensors PEFT adapter.
    """
    checked = {
        check_adapter_name(n): check_adapter_dir(f, f"adapter {n!r}") for n, f in folders.items()
    }
    for name, folder in checked.items():
        if isinstance(model, _peft().PeftModel):
            if name in model.peft_config:
                raise ConfigError(f"adapter {name!r}: already loaded; pick another name")
            model.load_adapter(str(folder), adapter_name=name, is_trainable=trainable)
        else:
            model = load_adapter(model, folder, name=name, trainable=trainable)
    return _keep_prefix_in_generation(model)


def list_adapters(model: Any) -> list[str]:
    """Names of the adapters on ``model`` (empty for a plain model)."""
    return list(getattr(model, "peft_config", {}) or {})


def switch_adapter(model: Any, name: str) -> None:
    """Make adapter ``name`` the active one.

    Raises:
        ConfigError: no adapter of that name is loaded.
    """
    _require_loaded(model, [name])
    model.set_adapter(name)


def combine_adapters(
    model: Any,
    names: list[str],
    weights: list[float],
    new_name: str,
    combination_type: Literal["linear", "cat"] = "linear",
) -> str:
    """Add adapter ``new_name``, a weighted combination of loaded LoRA adapters, and activate it.

    ``cat`` stacks the adapters' ranks, so the new update is exactly
    ``sum(weight * delta)``; ``linear`` mixes the A and B factors (same rank needed,
    cross terms included) and keeps the rank.

    Raises:
        ConfigError: unknown names, a weight count that does not match, or adapters
            that cannot be combined this way.
    """
    check_adapter_name(new_name, "new adapter name")
    _require_loaded(model, names)
    if len(weights) != len(names):
        raise ConfigError(f"weights {weights}: need one weight per adapter ({len(names)})")
    if combination_type not in ("linear", "cat"):
        raise ConfigError(f"combination type {combination_type!r}: use 'linear' or 'cat'")
    if new_name in model.peft_config:
        raise ConfigError(f"adapter {new_name!r}: already loaded; pick another name")
    try:
        model.add_weighted_adapter(names, weights, new_name, combination_type=combination_type)
    except (ValueError, AttributeError, TypeError) as err:
        raise ConfigError(
            f"adapters {names}: cannot combine ({combination_type}): {_first(err)}"
        ) from None
    model.set_adapter(new_name)
    return new_name


def save_adapter(model: Any, out_dir: str | Path, name: str | None = None) -> None:
    """Save one adapter's weights (safetensors) and config flat into ``out_dir``.

    PEFT puts every adapter but ``default`` in a sub-folder named after it; the files
    are moved up so that the folder loads under any name.
    """
    name = check_adapter_name(name or model.active_adapter)
    out = Path(out_dir)
    model.save_pretrained(str(out), selected_adapters=[name], safe_serialization=True)
    if name != "default":
        nested = out / name
        for item in nested.iterdir():
            target = out / item.name
            if target.is_dir():
                shutil.rmtree(target)
            item.replace(target)
        nested.rmdir()
    _sort_set_fields(out / "adapter_config.json", model.peft_config[name])


def _sort_set_fields(config_file: Path, peft_config: Any) -> None:
    """Write PEFT's set-valued fields (``target_modules``) sorted.

    PEFT writes a set in its iteration order, which follows the per-process string
    hash seed, so the same adapter saved by two processes would differ in bytes.
    """
    fields = [key for key, value in vars(peft_config).items() if isinstance(value, set)]
    saved = json.loads(config_file.read_text(encoding="utf-8"))
    for key in fields:
        if isinstance(saved.get(key), list):
            saved[key] = sorted(saved[key], key=str)
    config_file.write_text(json.dumps(saved, indent=2, sort_keys=True), encoding="utf-8")


def merge(model: Any) -> Any:
    """Fold the active adapter into the base weights and return the plain model."""
    return model.merge_and_unload()


def adapter_info(folder: str | Path) -> dict[str, Any]:
    """Kind, rank, target modules and weight size of a saved adapter folder.

    ``kind`` uses ``method.kind`` names; target modules are shown by their last name
    (PEFT records "all-linear" as every matched module's full path).
    """
    path = check_adapter_dir(folder)
    config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    targets = config.get("target_modules") or []
    if isinstance(targets, list):
        targets = ",".join(sorted({name.rsplit(".", 1)[-1] for name in targets}))
    peft_type = str(config.get("peft_type", "?"))
    kind = PEFT_TYPE_KINDS.get(peft_type, peft_type.lower())
    if kind == "lora" and config.get("use_dora"):
        kind = "dora"
    return {
        "kind": kind,
        "rank": config.get("r"),
        "virtual_tokens": config.get("num_virtual_tokens"),
        "target_modules": targets or "-",
        "bytes": (path / "adapter_model.safetensors").stat().st_size,
    }


def parameter_counts(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def _keep_prefix_in_generation(model: Any) -> Any:
    """Make ``generate`` use a prefix-tuning adapter's key/value prefix.

    PEFT 0.21 injects the prefix as ``past_key_values`` while transformers 5 generation
    passes its own (empty) ``cache``, which wins: the prefix would be silently
    dropped. Handing PEFT's prefilled cache over as ``cache`` restores it; once PEFT
    fills ``cache`` itself there is nothing to hand over and this does nothing.
    """
    prefix = any(c.peft_type.value == "PREFIX_TUNING" for c in model.peft_config.values())
    if not prefix or getattr(model, "_prefix_kept_in_generation", False):
        return model
    prepare = model.prepare_inputs_for_generation

    def prepare_with_prefix(*args: Any, **kwargs: Any) -> dict[str, Any]:
        inputs = prepare(*args, **kwargs)
        injected = inputs.get("past_key_values")
        cache = inputs.get("cache")
        if injected is not None and cache is not None and cache.get_seq_length() == 0:
            inputs["cache"] = inputs.pop("past_key_values")
        return inputs

    model.prepare_inputs_for_generation = prepare_with_prefix
    model._prefix_kept_in_generation = True
    return model


def _peft() -> ModuleType:
    """The peft package, imported on first use.

    Importing it pulls in transformers and bitsandbytes (seconds on a small machine),
    which reading an adapter folder's config (`tuneforge adapters list`) does not need.
    """
    import peft

    return peft


def _require_loaded(model: Any, names: list[str]) -> None:
    loaded = list_adapters(model)
    for name in names:
        check_adapter_name(name)
        if name not in loaded:
            raise ConfigError(
                f"adapter {name!r}: not loaded (loaded: {', '.join(loaded) or 'none'})"
            )


def _first(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
