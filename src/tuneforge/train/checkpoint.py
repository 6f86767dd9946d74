"""Training checkpoints: complete or absent, never half-written, and loaded without pickle.

A checkpoint is a folder ``step-<N>`` holding:

* ``trainable.safetensors``: the parameters that train (all of them for full fine-tuning);
* ``optimizer.safetensors`` + the optimizer's hyper-parameters in ``state.json``;
* ``rng.safetensors``: the torch (and CUDA) random states, so dropout replays exactly;
* ``state.json``: step, data position, scheduler state, best validation loss, the
  stage key of the config that made it, and the python/numpy random states.

It is written into ``.step-<N>.tmp`` and renamed when complete, so a kill during a
save leaves only a temporary folder that :func:`latest_checkpoint` ignores. The
newest ``keep`` checkpoints are kept, plus the best on validation loss.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tuneforge.errors import ConfigError

STATE = "state.json"


@dataclass
class TrainState:
    """Where training is: what a resumed run needs besides tensors."""

    step: int = 0
    epoch: int = 0
    offset: int = 0  # micro-batches already taken from this epoch's order
    val_before: float | None = None
    val_metrics_before: dict[str, float] = field(default_factory=dict)
    best_val: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    trained_tokens: int = 0
    skipped: int = 0  # consecutive batches skipped for a non-finite loss
    losses: list[float] = field(default_factory=list)


def save_checkpoint(
    root: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: TrainState,
    key: str,
    keep: int,
) -> Path:
    """Write checkpoint ``step-<N>`` under ``root`` atomically, then prune old ones."""
    final = root / f"step-{state.step}"
    tmp = root / f".step-{state.step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(_trainable(model), tmp / "trainable.safetensors")
    tensors, optimizer_meta = _flatten_optimizer(optimizer)
    save_file(tensors, tmp / "optimizer.safetensors")
    save_file(_rng_tensors(), tmp / "rng.safetensors")
    record = {
        "key": key,
        "train": asdict(state),
        "scheduler": scheduler.state_dict(),
        "optimizer": optimizer_meta,
        "python_random": _python_random_state(),
        "numpy_random": _numpy_random_state(),
    }
    (tmp / STATE).write_text(json.dumps(record, default=_jsonable) + "\n")
    _fsync_dir(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    prune(root, keep, state.best_step)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (temporary folders never count)."""
    done = [p for p in root.glob("step-*") if (p / STATE).is_file()] if root.is_dir() else []
    return max(done, key=lambda p: int(p.name.removeprefix("step-")), default=None)


def load_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    key: str,
) -> TrainState:
    """Restore model, optimizer, scheduler and random states; return the training state.

    Raises:
        ConfigError: the checkpoint was made with a different config.
    """
    record = json.loads((path / STATE).read_text())
    if record["key"] != key:
        raise ConfigError(
            f"checkpoint {path} was made with a different training config; "
            "train without --resume to start over"
        )
    missing = set(_trainable(model)) - set(weights := load_file(path / "trainable.safetensors"))
    if missing:
        raise ConfigError(f"checkpoint {path} lacks {len(missing)} trainable tensors")
    model.load_state_dict(weights, strict=False)
    optimizer.load_state_dict(
        _unflatten_optimizer(load_file(path / "optimizer.safetensors"), record["optimizer"])
    )
    scheduler.load_state_dict(record["scheduler"])
    _restore_rng(load_file(path / "rng.safetensors"), record)
    return TrainState(**record["train"])


def prune(root: Path, keep: int, best_step: int | None) -> None:
    """Delete all but the newest ``keep`` checkpoints and the best one."""
    done = sorted(
        (p for p in root.glob("step-*") if (p / STATE).is_file()),
        key=lambda p: int(p.name.removeprefix("step-")),
    )
    for path in done[:-keep]:
        if best_step is None or path.name != f"step-{best_step}":
            shutil.rmtree(path)


def _trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: p.detach().contiguous().cpu()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], Any]:
    """Optimizer state as named tensors plus JSON (hyper-parameters, scalar state)."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        index, _, key = name.partition(".")
        state.setdefault(int(index), {})[key] = value
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, value in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{index}"] = value
    return tensors


def _restore_rng(tensors: dict[str, torch.Tensor], record: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = record["python_random"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = record["numpy_random"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def _python_random_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _numpy_random_state() -> list[Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), pos, has_gauss, cached]


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint's state.json")


def _fsync_dir(path: Path) -> None:
    """Flush the files and the folder entry so the rename is not ahead of the data."""
    for item in path.iterdir():
        with open(item, "rb") as handle:
            os.fsync(handle.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
