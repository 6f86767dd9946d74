"""Supervised fine-tuning recipe: LoRA on chat data, in one readable loop.

The loss of an optimizer step is the sum of per-token losses over all of its
micro-batches divided by the number of trained tokens in the step, so
gradient accumulation matches one large batch even for ragged samples.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import get_scheduler

from tuneforge.config.schema import Config
from tuneforge.console import progress
from tuneforge.data.prepare import read_tokens
from tuneforge.models.hardware import device, resolve_dtype
from tuneforge.models.load import load_model, load_tokenizer
from tuneforge.train.adapters import attach_lora, parameter_counts, save_adapter
from tuneforge.train.batching import collate, epoch_order
from tuneforge.train.loss import token_loss_sum, trained_tokens

Rows = tuple[list[list[int]], list[list[int]]]


def train_sft(
    config: Config,
    model_path: str,
    data_dir: Path,
    out_dir: Path,
    log: Callable[..., None] = lambda **_: None,
) -> dict[str, Any]:
    """Fine-tune a LoRA adapter on the prepared training split and save it to ``out_dir/adapter``.

    Args:
        config: The whole config (model, method, train, seed).
        model_path: The base model (hub id or folder).
        data_dir: The data stage's folder.
        out_dir: Where to write the adapter and tokenizer.
        log: Receives one metrics record per step (``step=..., loss=...``).

    Returns:
        A summary: steps, validation loss before and after, throughput.
    """
    torch.manual_seed(config.seed)
    dev = device()
    dtype = resolve_dtype(config.model.precision, dev)
    spec = config.model
    tokenizer = load_tokenizer(
        model_path, revision=spec.revision, trust_remote_code=spec.trust_remote_code
    )
    base = load_model(
        model_path,
        dtype=dtype,
        revision=spec.revision,
        trust_remote_code=spec.trust_remote_code,
        device=dev,
    )
    model = attach_lora(base, config.method)
    trainable, total = parameter_counts(model)
    train_rows, val_rows = read_tokens(data_dir, "train"), read_tokens(data_dir, "val")
    pad_id = tokenizer.pad_token_id
    cfg = config.train
    per_epoch = math.ceil(len(train_rows[0]) / (cfg.batch_size * cfg.grad_accum))
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch))
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    scheduler = get_scheduler(
        cfg.schedule if cfg.schedule != "constant" else "constant_with_warmup",
        optimizer,
        num_warmup_steps=math.ceil(cfg.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    val_before = mean_token_loss(model, val_rows, cfg.batch_size, pad_id, dev)
    batches = _micro_batches(train_rows, cfg.batch_size, config.seed, pad_id)
    model.train()
    seen_tokens, started, losses = 0, time.time(), []
    with progress() as bar:
        task = bar.add_task(f"train {config.method.kind}", total=total_steps, info="")
        for step in range(1, total_steps + 1):
            group = [next(batches) for _ in range(cfg.grad_accum)]
            step_tokens = sum(trained_tokens(b["labels"]) for b in group)
            step_loss = 0.0
            for batch in group:
                batch = {k: v.to(dev) for k, v in batch.items()}
                logits = model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                ).logits
                loss_sum, _ = token_loss_sum(logits, batch["labels"])
                (loss_sum / max(step_tokens, 1)).backward()
                step_loss += loss_sum.item()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            seen_tokens += step_tokens
            losses.append(step_loss / max(step_tokens, 1))
            rate = seen_tokens / max(time.time() - started, 1e-9)
            lr = scheduler.get_last_lr()[0]
            log(
                step=step,
                loss=round(losses[-1], 5),
                lr=lr,
                grad_norm=round(float(grad_norm), 4),
                trained_tokens_per_s=round(rate, 1),
            )
            bar.update(task, advance=1, info=f"loss {losses[-1]:.3f} lr {lr:.1e} {rate:,.0f} tok/s")
    seconds = time.time() - started
    val_after = mean_token_loss(model, val_rows, cfg.batch_size, pad_id, dev)
    log(step=total_steps, val_loss=round(val_after, 5))
    save_adapter(model, out_dir / "adapter")
    tokenizer.save_pretrained(out_dir / "adapter")
    return {
        "method": config.method.kind,
        "steps": total_steps,
        "train_samples": len(train_rows[0]),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "precision": str(dtype).removeprefix("torch."),
        "device": dev.type,
        "train_loss_last": round(sum(losses[-10:]) / len(losses[-10:]), 5),
        "val_loss_before": round(val_before, 5) if val_rows[0] else None,
        "val_loss_after": round(val_after, 5) if val_rows[0] else None,
        "trained_tokens": seen_tokens,
        "trained_tokens_per_s": round(seen_tokens / max(seconds, 1e-9), 1),
        "seconds": round(seconds, 2),
    }


@torch.no_grad()
def mean_token_loss(
    model: Any, rows: Rows, batch_size: int, pad_id: int, dev: torch.device
) -> float:
    """Mean next-token loss over the trained tokens of ``rows`` (NaN when there are none)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    ids, labels = rows
    for start in range(0, len(ids), batch_size):
        batch = collate(ids[start : start + batch_size], labels[start : start + batch_size], pad_id)
        batch = {k: v.to(dev) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss_sum, n = token_loss_sum(logits, batch["labels"])
        total, count = total + loss_sum.item(), count + n
    model.train(was_training)
    return total / count if count else float("nan")


def _micro_batches(
    rows: Rows, batch_size: int, seed: int, pad_id: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless micro-batches, reshuffled (seeded) at every epoch."""
    ids, labels = rows
    epoch = 0
    while True:
        order = epoch_order(len(ids), seed, epoch)
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            yield collate([ids[i] for i in chosen], [labels[i] for i in chosen], pad_id)
        epoch += 1
