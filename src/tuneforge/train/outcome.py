"""What a training run reports when it ends, and the signals that end it early."""

from __future__ import annotations

import signal
from contextlib import suppress
from typing import Any


def training_summary(
    session: Any,
    model: Any,
    folder: str | None,
    after: dict[str, float],
    seconds: float,
    tokens_before: int,
) -> dict[str, Any]:
    """The train stage's summary: sizes, losses before and after, speed, best step."""
    state, config = session.state, session.config
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    last = state.losses[-10:]
    summary = {
        "method": config.method.kind,
        "objective": config.objective,
        "output": folder,
        "steps": state.step,
        "total_steps": session.total_steps,
        "processes": session.accelerator.num_processes,
        "train_samples": len(session.batches.rows),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "precision": str(session.dtype).removeprefix("torch."),
        "device": session.accelerator.device.type,
        "train_loss_last": round(sum(last) / len(last), 5) if last else None,
        "val_loss_before": _round(state.val_before),
        "val_loss_after": _round(after.get("loss")),
        "best_val_loss": _round(state.best_val),
        "best_step": state.best_step,
        "trained_tokens": state.trained_tokens,
        "trained_tokens_per_s": round(
            (state.trained_tokens - tokens_before) / max(seconds, 1e-9), 1
        ),
        "seconds": round(seconds, 2),
    }
    for name, value in after.items():
        if name != "loss":
            summary[f"val_{name}_before"] = _round(state.val_metrics_before.get(name))
            summary[f"val_{name}_after"] = _round(value)
    return {**summary, **session.extra.get("summary", {})}


def _round(value: float | None) -> float | None:
    return round(value, 5) if value is not None else None


class StopSignals:
    """Turn SIGTERM/SIGINT into a flag the loop checks after each step."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with suppress(ValueError):  # not the main thread: leave signals alone
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *_: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, _frame: Any) -> None:
        self.received = signal.Signals(signum).name
