"""Measure what ``tuneforge plan`` estimates: a few real training steps' time and peak memory.

On a GPU the CUDA allocator's statistics give the peak; on a CPU, RSS mostly
reflects the allocator's caching, so :class:`StorageTracker` counts live tensor
storage operation by operation instead.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from tuneforge.config.schema import Config
from tuneforge.models.hardware import device, resolve_dtype
from tuneforge.models.local import is_local
from tuneforge.models.planner import Measurement, model_shape, tiny_base_dir


def measure_by_default(config: Config) -> bool:
    """Measure when the real weights are at hand: the tiny model or a local folder."""
    name = config.model.name_or_path
    return name == "tiny" or (is_local(name) and any(Path(name).expanduser().glob("*.safetensors")))


def measure(config: Config, hf_config: Any) -> Measurement:
    """Train three real steps on synthetic rows of the planned length and measure them.

    Step 1 warms up and creates the AdamW state; step 2 is timed; memory is read in the
    last. On a GPU the numbers are ``torch.cuda`` allocator statistics; on a CPU they
    are the bytes of live tensor storage, tracked op by op (:class:`StorageTracker`),
    which, unlike the process RSS, ignores the allocator's caching.
    """
    with _model_folder(config, hf_config) as path:
        dev = device()
        dtype = resolve_dtype(config.model.precision, dev)
        model, optimizer = _training_model(config, path, dtype, dev)
        batch = _synthetic_batch(config, hf_config, dev)
        clip = config.train.max_grad_norm
        _train_step(model, optimizer, batch, clip)  # warm-up; creates the AdamW state
        started = time.perf_counter()
        _train_step(model, optimizer, batch, clip)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        numbers = _measured_step(model, optimizer, batch, clip, dev)
    return Measurement(where=str(dev), dtype=dtype, step_seconds=seconds, **numbers)


@contextmanager
def _model_folder(config: Config, hf_config: Any) -> Iterator[str]:
    """The weights to measure with: a local folder, the tiny build, or random ones."""
    name = config.model.name_or_path
    built = tiny_base_dir(config) if name == "tiny" else None
    if name != "tiny" or built is not None:
        yield str(built or name)
        return
    from transformers import AutoModelForCausalLM

    # memory and step time do not depend on the weights' values
    with tempfile.TemporaryDirectory(prefix="tuneforge-plan-") as folder:
        AutoModelForCausalLM.from_config(hf_config).save_pretrained(folder)
        yield folder


def _training_model(
    config: Config, path: str, dtype: torch.dtype, dev: torch.device
) -> tuple[Any, torch.optim.Optimizer]:
    from tuneforge.train.methods import optimizer_parameters, prepare_model

    model = prepare_model(path, config, dtype, dev)
    if config.train.gradient_checkpointing:  # as the training loop sets it up
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    model.train()
    params = optimizer_parameters(model, config.method)
    cfg = config.train
    return model, torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _synthetic_batch(config: Config, hf_config: Any, dev: torch.device) -> dict[str, Any]:
    from tuneforge.train.rows import Rows, collate_rows

    length = config.data.pack_length or config.data.max_length
    vocab = model_shape(hf_config).vocab
    seeded = torch.Generator().manual_seed(config.seed)
    ids = torch.randint(0, vocab, (config.train.batch_size, length), generator=seeded)
    rows = Rows(ids.tolist(), ids.tolist())
    batch = collate_rows(rows, hf_config.pad_token_id or 0, torch.float32)
    return {key: value.to(dev) for key, value in batch.items()}


def _train_step(model: Any, optimizer: Any, batch: dict[str, Any], max_norm: float) -> None:
    _loss(model, batch).backward()
    _optimizer_step(model, optimizer, max_norm)


def _optimizer_step(model: Any, optimizer: Any, max_norm: float) -> None:
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _loss(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """Mean token loss, as the training loop computes it (the logits die with this frame)."""
    from tuneforge.train.loss import token_loss_sum

    inputs = dict(batch)
    labels = inputs.pop("labels")
    logits = model(**inputs).logits
    # prompt tuning prepends virtual tokens; the positions that match the labels are last
    loss, count = token_loss_sum(logits[:, -labels.size(1) :], labels)
    return loss / max(count, 1)


def _measured_step(
    model: Any, optimizer: Any, batch: dict[str, Any], max_norm: float, dev: torch.device
) -> dict[str, int]:
    """One step's bytes; activations are the forward's peak or the backward's less gradients."""
    weights = _storage_bytes(_weight_tensors(model))
    states = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    resident = [*_weight_tensors(model), *states]
    probe = _CudaProbe() if dev.type == "cuda" else StorageTracker(resident)
    with probe:
        start = probe.live()
        loss = _loss(model, batch)
        forward = probe.restart_peak()
        loss.backward()
        del loss
        gradients = _storage_bytes(p.grad for p in model.parameters() if p.grad is not None)
        backward = probe.restart_peak()
        _optimizer_step(model, optimizer, max_norm)
        peak = max(forward, backward, probe.restart_peak())
    return {
        "weights": weights,
        "gradients": gradients,
        "optimizer": _storage_bytes(states),
        "activations": max(forward - start, backward - start - gradients),
        "peak": peak,
    }


def _weight_tensors(model: Any) -> list[torch.Tensor]:
    """Parameters, buffers and bitsandbytes' quantization constants."""
    tensors = [*model.parameters(), *model.buffers()]
    for param in model.parameters():
        state = getattr(param, "quant_state", None)
        while state is not None:
            tensors += [t for t in vars(state).values() if torch.is_tensor(t)]
            state = getattr(state, "state2", None)
    return tensors


def _storage_bytes(tensors: Any) -> int:
    seen = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(seen.values())


class _CudaProbe:
    """Live and peak bytes from the CUDA caching allocator's statistics."""

    def __enter__(self) -> _CudaProbe:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *_: object) -> None:
        torch.cuda.synchronize()

    def live(self) -> int:
        return torch.cuda.memory_allocated()

    def restart_peak(self) -> int:
        """The peak since the last call (or the start)."""
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        return peak


class StorageTracker(TorchDispatchMode):
    """Live and peak bytes of tensor storage on a CPU, seen op by op.

    Every tensor an op returns (forward, backward and optimizer ops alike) is
    registered by its storage; a storage counts until it is freed, checked before
    each op. Buffers a kernel allocates and frees inside one op are not seen.
    """

    def __init__(self, resident: list[torch.Tensor]) -> None:
        super().__init__()
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}
        self._now = self._peak = 0
        for tensor in resident:
            self._add(tensor)

    def live(self) -> int:
        self._sweep()
        return self._now

    def restart_peak(self) -> int:
        """The peak since the last call (or the start)."""
        peak, self._peak = self._peak, self.live()
        return peak

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self._sweep()
        result = func(*args, **(kwargs or {}))
        for item in tree_flatten(result)[0]:
            if isinstance(item, torch.Tensor):
                self._add(item)
        return result

    def _add(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        known = self._live.get(key)
        if key == 0 or (known is not None and not known[0].expired()):
            return
        if known is not None:  # freed inside the op and its address reused
            self._now -= known[1]
        self._live[key] = (StorageWeakRef(storage), storage.nbytes())
        self._now += storage.nbytes()
        self._peak = max(self._peak, self._now)

    def _sweep(self) -> None:
        for key in [key for key, (ref, _) in self._live.items() if ref.expired()]:
            self._now -= self._live.pop(key)[1]
