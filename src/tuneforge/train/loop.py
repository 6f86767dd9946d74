"""The training loop every recipe shares; a recipe plugs in a :class:`Task`.

A task says what the rows are, how a micro-batch is collated, what its loss is
normalised by (trained tokens for next-token objectives, pairs for preference
ones) and how its summed loss is computed. The loop owns the rest:

* one optimizer step = ``grad_accum`` micro-batches whose summed losses are
  divided by the units (tokens, pairs) in the step, across all processes, so
  accumulation and data parallelism equal one big batch even for ragged samples;
* validation every ``eval_every`` steps, early stopping with patience (the best
  weights are restored), checkpoints every ``save_every`` steps and at the end
  (:mod:`tuneforge.train.checkpoint`), resume from the newest one;
* SIGTERM/SIGINT save a checkpoint and stop cleanly; a NaN/Inf loss stops with
  the step and the last good checkpoint, or skips its batch (``on_nan: skip``).

Processes are set up by ``accelerate`` (one process, ``torchrun``/``accelerate
launch`` with DDP, FSDP or DeepSpeed); the model is loaded in the precision the
hardware really supports, so no autocast is involved. Online RL replaces the
optimizer step (generation comes first) through :attr:`Task.step`.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from transformers import get_scheduler, set_seed

from tuneforge.config.schema import Config
from tuneforge.console import progress, say
from tuneforge.errors import StageFailed, TrainingStopped
from tuneforge.models.hardware import device, resolve_dtype
from tuneforge.models.load import load_tokenizer
from tuneforge.train.checkpoint import (
    TrainState,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from tuneforge.train.loss import token_loss_sum, trained_tokens
from tuneforge.train.methods import (
    optimizer_parameters,
    prepare_model,
    save_trained,
    update_unfreezing,
)
from tuneforge.train.outcome import StopSignals, training_summary
from tuneforge.train.rows import MicroBatches

Log = Callable[..., None]
Batch = dict[str, torch.Tensor]
LossSum = Callable[[Any, Batch], tuple[torch.Tensor, dict[str, torch.Tensor]]]
MAX_SKIPPED = 20  # consecutive non-finite batches before even on_nan: skip gives up


def lm_loss_sum(model: Any, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Summed next-token loss over a micro-batch's trained tokens (no extra metrics)."""
    batch = dict(batch)
    labels = batch.pop("labels")
    logits = model(**batch).logits
    # Prompt tuning prepends virtual tokens; the positions that match the labels are the last.
    loss, _ = token_loss_sum(logits[:, -labels.size(1) :], labels)
    return loss, {}


def lm_count(batch: Batch) -> int:
    """Trained tokens of a micro-batch: what next-token losses are normalised by."""
    return trained_tokens(batch["labels"])


@dataclass
class Task:
    """What a recipe plugs into the loop.

    Attributes:
        rows: Training rows (``len`` and ``take``).
        val_rows: Validation rows (may be empty).
        collate: Rows -> a micro-batch of tensors.
        count: The units a micro-batch's loss is normalised by (tokens, pairs).
        loss_sum: ``(model, batch on device) -> (summed loss, summed metrics)``;
            metrics are divided by the same units before they are logged.
        replay: General-domain rows mixed into each epoch (next-token objectives).
        replay_fraction: Their share of an epoch.
        step: Replaces the loop's optimizer step (online RL); returns False when skipped.
        before_training: Called once the session is open (e.g. reference log-probs).
        validate: Replaces the loop's validation (online RL scores generated replies);
            returns metrics with a ``loss`` (lower is better) for early stopping.
        units: What ``count`` counts, for the summary (``tokens``, ``pairs``).
    """

    rows: Any
    val_rows: Any
    collate: Callable[[Any], Batch]
    count: Callable[[Batch], int] = lm_count
    loss_sum: LossSum = lm_loss_sum
    replay: Any = None
    replay_fraction: float = 0.0
    step: Callable[[Session], bool] | None = None
    before_training: Callable[[Session], None] | None = None
    validate: Callable[[Session], dict[str, float]] | None = None
    units: str = "tokens"


class Accumulated(NamedTuple):
    """An optimizer step's mean loss, its units across processes, and its mean metrics."""

    loss: float
    count: int
    metrics: dict[str, float]


@dataclass
class Session:
    """Everything one training run holds while its loop turns."""

    config: Config
    accelerator: Accelerator
    model: Any
    optimizer: Any
    scheduler: Any
    batches: MicroBatches
    task: Task
    total_steps: int
    checkpoints: Path
    key: str
    log: Log
    tokenizer: Any
    dtype: torch.dtype
    state: TrainState = field(default_factory=TrainState)
    resume_hint: str = "tuneforge train CONFIG --resume"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


TaskFactory = Callable[[Config, Path, Any, torch.dtype, Accelerator], Task]


def train_task(
    config: Config,
    model_path: str,
    data_dir: Path,
    out_dir: Path,
    make_task: TaskFactory,
    *,
    checkpoints: Path,
    key: str,
    resume: bool = False,
    log: Log = lambda **_: None,
    resume_hint: str = "tuneforge train CONFIG --resume",
) -> dict[str, Any]:
    """Train a task on the prepared data and save the result (adapter or model) into ``out_dir``.

    Args:
        config: The whole config (model, method, objective, train, seed).
        model_path: The base model (hub id or folder).
        data_dir: The data stage's folder.
        out_dir: Where the trained adapter or model and the tokenizer go.
        make_task: Builds the recipe's task from the config, data folder and tokenizer.
        checkpoints: Folder of this run's checkpoints (outlives the stage folder).
        key: The train stage's key; a checkpoint made under another key is refused.
        resume: Continue from the newest complete checkpoint.
        log: Receives one metrics record per step (``step=..., loss=...``).
        resume_hint: The command that resumes, for the message after a signal.

    Returns:
        A summary: steps, validation loss (and metrics) before and after, throughput.
    """
    session = open_session(config, model_path, data_dir, checkpoints, key, log, make_task)
    session.resume_hint = resume_hint
    if resume:
        _resume(session)
    elif session.main:
        shutil.rmtree(checkpoints, ignore_errors=True)
    session.accelerator.wait_for_everyone()
    if session.task.before_training is not None:
        session.task.before_training(session)
    if session.state.step == 0:
        session.state.val_metrics_before = validate(session)
        session.state.val_before = session.state.val_metrics_before.get("loss")
    started, tokens_before = time.time(), session.state.trained_tokens
    stopped_early = run_loop(session)
    seconds = time.time() - started
    if stopped_early and session.state.best_step is not None:
        _restore_best(session)
    after = validate(session)
    model = session.accelerator.unwrap_model(session.model)
    folder = None
    if session.main:
        folder = save_trained(model, config.method, out_dir)
        session.tokenizer.save_pretrained(out_dir / folder)
    session.accelerator.wait_for_everyone()
    return training_summary(session, model, folder, after, seconds, tokens_before)


def open_session(
    config: Config,
    model_path: str,
    data_dir: Path,
    checkpoints: Path,
    key: str,
    log: Log,
    make_task: TaskFactory,
) -> Session:
    """Load model and data, build optimizer and schedule, and set up the processes."""
    # accelerate only sets up CPU data parallelism (gloo) when told it runs on CPU.
    accelerator = Accelerator(cpu=device().type == "cpu")
    set_seed(config.seed)
    dtype = resolve_dtype(config.model.precision, accelerator.device)
    spec, cfg = config.model, config.train
    tokenizer = load_tokenizer(
        model_path, revision=spec.revision, trust_remote_code=spec.trust_remote_code
    )
    model = prepare_model(model_path, config, dtype, accelerator.device)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    task = make_task(config, data_dir, tokenizer, dtype, accelerator)
    batches = MicroBatches(
        task.rows,
        cfg.batch_size,
        config.seed,
        tokenizer.pad_token_id,
        dtype,
        replay=task.replay,
        replay_fraction=task.replay_fraction,
        rank=accelerator.process_index,
        world=accelerator.num_processes,
        collate=task.collate,
    )
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * batches.per_epoch / cfg.grad_accum))
    optimizer = torch.optim.AdamW(
        optimizer_parameters(model, config.method), lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    scheduler = get_scheduler(
        cfg.schedule if cfg.schedule != "constant" else "constant_with_warmup",
        optimizer,
        num_warmup_steps=math.ceil(cfg.warmup_ratio * total),
        num_training_steps=total,
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    return Session(
        config=config,
        accelerator=accelerator,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        batches=batches,
        task=task,
        total_steps=total,
        checkpoints=checkpoints,
        key=key,
        log=log,
        tokenizer=tokenizer,
        dtype=dtype,
    )


def run_loop(session: Session) -> bool:
    """Step until the last step, early stopping or a signal; True when stopped early."""
    cfg, state = session.config.train, session.state
    started, tokens_at_start = time.time(), state.trained_tokens
    step = session.task.step or optimizer_step
    with StopSignals() as signals, progress() as bar:
        task = bar.add_task(
            f"{session.config.objective} {session.config.method.kind}",
            total=session.total_steps,
            info="",
        )
        bar.update(task, completed=state.step)
        while state.step < session.total_steps:
            update_unfreezing(
                session.accelerator.unwrap_model(session.model),
                session.config.method,
                state.step,
            )
            if not step(session):
                continue
            rate = (state.trained_tokens - tokens_at_start) / max(time.time() - started, 1e-9)
            lr = session.scheduler.get_last_lr()[0]
            bar.update(
                task, advance=1, info=f"loss {state.losses[-1]:.3f} lr {lr:.1e} {rate:,.0f} tok/s"
            )
            session.log(
                step=state.step,
                total_steps=session.total_steps,
                loss=round(state.losses[-1], 5),
                lr=lr,
                epoch=state.epoch,
                trained_tokens_per_s=round(rate, 1),
                **session.extra.pop("step_metrics", {}),
            )
            stop = _evaluate_if_due(session)
            if cfg.save_every and state.step % cfg.save_every == 0:
                save(session)
            if signals.received:
                path = save(session)
                raise TrainingStopped(
                    f"stopped by {signals.received} at step {state.step}; checkpoint {path}. "
                    f"Resume with: {session.resume_hint}"
                )
            if stop:
                return True
    save(session)
    return False


def optimizer_step(session: Session) -> bool:
    """One optimizer step over ``grad_accum`` micro-batches; False when a NaN batch was skipped."""
    cfg, state = session.config.train, session.state
    group = [next(session.batches) for _ in range(cfg.grad_accum)]
    state.epoch, state.offset = session.batches.epoch, session.batches.offset
    result = accumulate_gradients(
        session.model, group, session.accelerator, session.task.loss_sum, session.task.count
    )
    if not apply_gradients(session, result.loss):
        return False
    if session.task.units == "tokens":
        state.trained_tokens += result.count
    else:
        state.trained_tokens += sum(trained_tokens(b["labels"]) for b in group)
    session.extra["step_metrics"] = {k: round(v, 5) for k, v in result.metrics.items()}
    return True


def apply_gradients(session: Session, loss: float) -> bool:
    """Clip and step (or handle a non-finite loss); False when the batch was skipped."""
    cfg, state = session.config.train, session.state
    if not math.isfinite(loss):
        session.optimizer.zero_grad(set_to_none=True)
        state.skipped += 1
        if cfg.on_nan == "skip" and state.skipped < MAX_SKIPPED:
            say(f"step {state.step + 1}: loss is {loss}; batch skipped (train.on_nan: skip)")
            return False
        last = latest_checkpoint(session.checkpoints)
        raise StageFailed(
            f"loss is {loss} at step {state.step + 1}; last good checkpoint: "
            f"{last or 'none'} (lower train.lr, or set train.on_nan: skip)"
        )
    state.skipped = 0
    session.accelerator.clip_grad_norm_(session.model.parameters(), cfg.max_grad_norm)
    session.optimizer.step()
    session.scheduler.step()
    session.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    state.losses.append(loss)
    return True


def accumulate_gradients(
    model: Any,
    group: list[Batch],
    accelerator: Accelerator,
    loss_sum: LossSum = lm_loss_sum,
    count: Callable[[Batch], int] = lm_count,
) -> Accumulated:
    """Backward over an optimizer step's micro-batches.

    Each micro-batch's summed loss is divided by the units (trained tokens, pairs)
    of the whole step on all processes, so the gradient equals that of one batch
    holding every micro-batch, however ragged the samples.

    Returns:
        The step's mean loss, its units across processes, and its mean metrics.
    """
    local = sum(count(b) for b in group)
    units = int(accelerator.reduce(torch.tensor(local, device=accelerator.device), "sum"))
    total = torch.zeros((), device=accelerator.device)
    sums: dict[str, torch.Tensor] = {}
    for index, batch in enumerate(group):
        last = index == len(group) - 1
        with nullcontext() if last else accelerator.no_sync(model):
            part, metrics = loss_sum(model, to_device(batch, accelerator.device))
            # DDP averages gradients over processes; scaling by their number makes it a sum.
            accelerator.backward(part * accelerator.num_processes / max(units, 1))
            total += part.detach()
            for name, value in metrics.items():
                sums[name] = sums.get(name, 0) + value.detach().float()
    reduced = {
        name: float(accelerator.reduce(value, "sum")) / max(units, 1)
        for name, value in sums.items()
    }
    return Accumulated(float(accelerator.reduce(total, "sum")) / max(units, 1), units, reduced)


def to_device(batch: Batch, dev: torch.device) -> Batch:
    return {k: v.to(dev) for k, v in batch.items()}


@torch.no_grad()
def validate(session: Session) -> dict[str, float]:
    """Mean loss (``loss``) and metrics over the validation split; empty without one."""
    task = session.task
    if task.validate is not None:
        return task.validate(session)
    rows = task.val_rows
    if not len(rows):
        return {}
    model, dev = session.model, session.accelerator.device
    was_training = model.training
    model.eval()
    total, units = 0.0, 0
    sums: dict[str, float] = {}
    size = session.config.train.batch_size
    for start in range(0, len(rows), size):
        batch = task.collate(rows.take(list(range(start, min(start + size, len(rows))))))
        units += task.count(batch)
        loss, metrics = task.loss_sum(model, to_device(batch, dev))
        total += float(loss)
        for name, value in metrics.items():
            sums[name] = sums.get(name, 0.0) + float(value)
    model.train(was_training)
    if not units:
        return {}
    return {"loss": total / units, **{name: value / units for name, value in sums.items()}}


def validation_loss(session: Session) -> float | None:
    """Mean validation loss (None without a validation split)."""
    return validate(session).get("loss")


def _evaluate_if_due(session: Session) -> bool:
    """Validation every ``eval_every`` steps; True when patience has run out."""
    cfg, state = session.config.train, session.state
    if not cfg.eval_every or state.step % cfg.eval_every:
        return False
    values = validate(session)
    val = values.get("loss")
    if val is None:
        return False
    session.log(step=state.step, **{f"val_{k}": round(v, 5) for k, v in values.items()})
    if state.best_val is None or val < state.best_val:
        state.best_val, state.best_step, state.evals_without_improvement = val, state.step, 0
        if cfg.early_stopping_patience:
            save(session)  # the best weights, restored if training stops early
        return False
    state.evals_without_improvement += 1
    patience = cfg.early_stopping_patience
    if patience and state.evals_without_improvement >= patience:
        say(
            f"early stopping at step {state.step}: best val loss {state.best_val:.4f} "
            f"at step {state.best_step}"
        )
        return True
    return False


def save(session: Session) -> Path:
    """Write a checkpoint of the current step (rank 0) and wait for every process."""
    path = session.checkpoints / f"step-{session.state.step}"
    if session.main:
        path = save_checkpoint(
            session.checkpoints,
            session.accelerator.unwrap_model(session.model),
            session.optimizer,
            session.scheduler,
            session.state,
            session.key,
            session.config.train.keep_checkpoints,
        )
    session.accelerator.wait_for_everyone()
    return path


def _resume(session: Session) -> None:
    path = latest_checkpoint(session.checkpoints)
    if path is None:
        say(f"no checkpoint in {session.checkpoints}: training from the start")
        return
    session.state = load_checkpoint(
        path,
        session.accelerator.unwrap_model(session.model),
        session.optimizer,
        session.scheduler,
        session.key,
    )
    session.batches.seek(session.state.epoch, session.state.offset)
    say(f"resumed from {path} (step {session.state.step} of {session.total_steps})")


def _restore_best(session: Session) -> None:
    path = session.checkpoints / f"step-{session.state.best_step}" / "trainable.safetensors"
    if path.is_file():
        model = session.accelerator.unwrap_model(session.model)
        model.load_state_dict(load_file(path), strict=False)
        say(f"restored the best weights (step {session.state.best_step})")
