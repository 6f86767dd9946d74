"""The preference recipes: ``reward`` (a reward model), ``dpo``, ``orpo``, ``simpo`` and ``kto``.

Each is a :class:`~tuneforge.train.loop.Task` on the shared loop: the rows are
the data stage's pairs (or unpaired samples for KTO), a micro-batch holds the
chosen rows then the rejected rows, one forward pass scores both, and the
per-pair losses of :mod:`tuneforge.train.preference_loss` are summed and divided
by the pairs of the whole optimizer step.

The reference model of DPO and KTO costs no second copy of the weights: before
step 0 the model *is* the reference (a new LoRA/DoRA/IA3 adapter is the
identity; full and freeze training have not moved yet; prompt and prefix
adapters are switched off), so the reference log-probabilities of every training
and validation row are computed once, kept with the rows and saved beside the
checkpoints for a resumed run. ORPO and SimPO need no reference.

Validation reports the loss, pairwise accuracy (chosen beats rejected: reward
score, or implicit reward ``beta * (log pi - log ref)``) and the mean margin.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from tuneforge.config.schema import Config
from tuneforge.console import progress, say
from tuneforge.train.loop import Batch, Session, Task, to_device
from tuneforge.train.methods import is_peft, sequence_logits
from tuneforge.train.pairs import Columns, collate_pairs, collate_unpaired, load_columns, pair_count
from tuneforge.train.preference_loss import (
    DEFAULT_BETA,
    bradley_terry_loss,
    dpo_loss,
    kto_loss,
    orpo_loss,
    sequence_logps,
    simpo_loss,
)
from tuneforge.train.reward import reward_scores

REFERENCE_FILE = "reference.safetensors"
USES_REFERENCE = ("dpo", "kto")


def preference_task(
    config: Config, data_dir: Path, tokenizer: Any, dtype: torch.dtype, _: Accelerator
) -> Task:
    """The task of ``config.objective`` on the prepared pairs (or unpaired rows)."""
    objective, pad = config.objective, tokenizer.pad_token_id
    kind = "unpaired" if objective == "kto" else "pairs"
    collate = collate_unpaired if kind == "unpaired" else collate_pairs

    def loss_sum(model: Any, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return preference_loss_sum(config, model, batch)

    return Task(
        rows=load_columns(data_dir, kind, "train"),
        val_rows=load_columns(data_dir, kind, "val"),
        collate=lambda rows: collate(rows, pad),
        count=pair_count,
        loss_sum=loss_sum,
        before_training=attach_reference if objective in USES_REFERENCE else None,
        units="pairs" if kind == "pairs" else "samples",
    )


def beta(config: Config) -> float:
    """``preference.beta``, or the objective's default from its paper."""
    return config.preference.beta or DEFAULT_BETA.get(config.objective, 0.1)


def preference_loss_sum(
    config: Config, model: Any, batch: Batch
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Summed per-pair losses of a micro-batch and summed metrics (accuracy, margin, rewards)."""
    spec, objective = config.preference, config.objective
    if objective == "reward":
        scores = reward_scores(model, batch["input_ids"], batch["attention_mask"])
        chosen, rejected = scores.chunk(2)
        losses = bradley_terry_loss(chosen, rejected, spec.margin + batch["margin"])
        return losses.sum(), _pair_metrics(chosen.detach(), rejected.detach())
    logits = sequence_logits(model, batch["input_ids"], batch["attention_mask"])
    logps, counts = sequence_logps(logits, batch["labels"])
    means = logps / counts.clamp(min=1)
    b = beta(config)
    if objective == "kto":
        losses, rewards = kto_loss(
            logps,
            batch["reference"],
            batch["desirable"],
            b,
            spec.desirable_weight,
            spec.undesirable_weight,
        )
        signed = torch.where(batch["desirable"], rewards, -rewards)
        return losses.sum(), {"accuracy": (signed > 0).float().sum(), "margin": signed.sum()}
    chosen_mean, rejected_mean = means.chunk(2)
    if objective == "dpo":
        policy, reference = logps, batch["reference"]
        if spec.loss == "ipo":  # IPO works on per-token means
            policy, reference = means, reference / counts.clamp(min=1)
        losses, good, bad = dpo_loss(
            *policy.chunk(2), *reference.chunk(2), b, spec.loss, spec.label_smoothing
        )
    elif objective == "orpo":
        losses, good, bad = orpo_loss(chosen_mean, rejected_mean, -chosen_mean, b)
    else:
        losses, good, bad = simpo_loss(chosen_mean, rejected_mean, b, spec.simpo_gamma)
    if spec.sft_weight and objective != "orpo":
        losses = losses - spec.sft_weight * chosen_mean
    return losses.sum(), _pair_metrics(good, bad)


def _pair_metrics(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "accuracy": (chosen > rejected).float().sum(),
        "margin": (chosen - rejected).sum(),
        "chosen_reward": chosen.sum(),
        "rejected_reward": rejected.sum(),
    }


def attach_reference(session: Session) -> None:
    """Give every training and validation row its reference log-probs (computed once).

    Raises:
        RuntimeError: a saved reference file does not match the rows (not resumable).
    """
    task, path = session.task, session.checkpoints / REFERENCE_FILE
    if path.is_file():
        saved = load_file(path)
        say(f"reference log-probs from {path}")
    else:
        saved = {
            split: reference_logps(session, rows)
            for split, rows in (("train", task.rows), ("val", task.val_rows))
            if len(rows)
        }
        if session.main:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file(saved, path)
        session.accelerator.wait_for_everyone()
    task.rows = _with_reference(task.rows, saved["train"], session.config.objective)
    if len(task.val_rows):
        task.val_rows = _with_reference(task.val_rows, saved["val"], session.config.objective)
    session.batches.rows = task.rows


@torch.no_grad()
def reference_logps(session: Session, rows: Columns) -> torch.Tensor:
    """Summed reply log-probs of each row under the model as it is before training.

    Pairs give ``[pairs, 2]`` (chosen, rejected); unpaired rows ``[rows]``.
    """
    model, task = session.model, session.task
    unwrapped = session.accelerator.unwrap_model(model)
    method = session.config.method
    prompt_learning = is_peft(method) and method.kind in ("prompt", "prefix")
    switch = unwrapped.disable_adapter() if prompt_learning else nullcontext()
    was_training = model.training
    model.eval()
    size = session.config.train.batch_size
    parts = []
    with switch, progress() as bar:
        job = bar.add_task("reference log-probs", total=len(rows), info="")
        for start in range(0, len(rows), size):
            batch = task.collate(rows.take(list(range(start, min(start + size, len(rows))))))
            batch = to_device(batch, session.accelerator.device)
            logits = sequence_logits(model, batch["input_ids"], batch["attention_mask"])
            parts.append(sequence_logps(logits, batch["labels"])[0].float().cpu())
            bar.advance(job, len(parts[-1]) // (1 if "desirable" in batch else 2))
    model.train(was_training)
    values = torch.cat([_pairs_view(p, "desirable" not in batch) for p in parts])
    return values.contiguous()


def _pairs_view(values: torch.Tensor, paired: bool) -> torch.Tensor:
    return torch.stack(values.chunk(2), dim=1) if paired else values


def _with_reference(rows: Columns, values: torch.Tensor, objective: str) -> Columns:
    if values.shape[0] != len(rows):
        raise RuntimeError(
            f"saved reference log-probs cover {values.shape[0]} rows, not {len(rows)}: "
            "train without --resume"
        )
    if objective == "kto":
        return rows.with_column("reference", values.tolist())
    chosen = rows.with_column("reference_chosen", values[:, 0].tolist())
    return chosen.with_column("reference_rejected", values[:, 1].tolist())
