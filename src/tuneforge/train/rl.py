"""Online RL: ``grpo`` and ``rloo`` against a reward model and/or Python reward functions.

One step of the loop (:mod:`tuneforge.train.loop`, through :attr:`Task.step`):

1. take ``batch_size x grad_accum`` prompts from the data stage's ``prompts/``;
2. sample ``rl.num_generations`` completions for each (temperature, top-p);
3. score them: the reward model's score of prompt + completion (rendered by the one
   rendering function with the reward model's template) and each reward function,
   weighted by ``rl.reward_weights``;
4. advantages within each prompt's group: GRPO ``(r - mean) / (std + eps)``;
   RLOO ``r' - mean of the others`` with the KL penalty folded into the reward,
   ``r' = r - kl_coef * sum_t (log pi - log ref)``;
5. ``rl.updates_per_batch`` optimizer steps on the clipped surrogate
   ``-min(rho A, clip(rho, 1 - clip, 1 + clip) A)`` per completion token, plus for
   GRPO ``kl_coef`` times the k3 estimate ``exp(ref - pi) - (ref - pi) - 1`` of the
   KL to the reference; summed over completion tokens and divided by the
   completion tokens of the whole step.

The reference is the model before training: for adapter methods the same weights
with the adapter switched off (no second copy), for full and freeze training a
frozen copy. Validation samples replies to ``rl.eval_prompts`` held-out prompts
from a fixed random stream and reports their mean reward (and that of greedy
replies), the KL to the reference per token and their length; its ``loss`` is
the negative reward.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from tuneforge.config.schema import Config
from tuneforge.train.batching import collate
from tuneforge.train.loop import (
    Batch,
    Session,
    Task,
    accumulate_gradients,
    apply_gradients,
    lm_count,
    to_device,
)
from tuneforge.train.loss import token_logps
from tuneforge.train.methods import is_peft, load_base, sequence_logits
from tuneforge.train.pairs import Columns, load_columns
from tuneforge.train.rollout import (
    Rewarder,
    build_rewarder,
    completion_rows,
    sample_completions,
    stop_ids,
)

STD_EPS = 1e-4


@dataclass
class Rollouts:
    """A step's completions as micro-batches holding what the loss needs, and the step's metrics.

    Each micro-batch has the rows (prompt + completion, labels on the completion),
    ``advantages``, and ``old`` (updates_per_batch > 1) and ``reference`` (a KL
    penalty) per-token log-probs when they are needed.
    """

    batches: list[Batch]
    metrics: dict[str, float]


@dataclass
class Context:
    """What the RL task keeps between steps: the rewarder and the reference weights."""

    config: Config
    model_path: str
    rewarder: Rewarder | None = None
    reference_model: Any = None


def rl_task(
    config: Config,
    data_dir: Path,
    tokenizer: Any,
    dtype: torch.dtype,
    accelerator: Accelerator,
    *,
    model_path: str,
) -> Task:
    """Prompts in, an RL step and a reward-based validation out."""
    context = Context(config, model_path)
    rows = load_columns(data_dir, "prompts", "train")
    val = load_columns(data_dir, "prompts", "val")
    held_out = val if len(val) else rows
    held_out = held_out.take(list(range(min(config.rl.eval_prompts, len(held_out)))))

    def setup(session: Session) -> None:
        rl = config.rl
        context.rewarder = build_rewarder(
            rl.reward_model,
            rl.reward_functions,
            rl.reward_weights,
            session.accelerator.device,
            config.data.max_length + rl.max_new_tokens,
            session.dtype,
        )
        if rl.kl_coef and not is_peft(config.method):
            context.reference_model = load_base(
                model_path, config, session.dtype, session.accelerator.device, quantize=False
            ).eval()

    return Task(
        rows=rows,
        val_rows=held_out,
        collate=lambda chosen: chosen,
        step=partial(rl_step, context=context),
        before_training=setup,
        validate=partial(validate_rewards, context=context, prompts=held_out),
    )


def rl_step(session: Session, context: Context) -> bool:
    """Sample, score, and take ``rl.updates_per_batch`` optimizer steps; False if skipped."""
    config, state = session.config, session.state
    prompts = [next(session.batches) for _ in range(config.train.grad_accum)]
    state.epoch, state.offset = session.batches.epoch, session.batches.offset
    merged = Columns({k: [v for p in prompts for v in p[k]] for k in prompts[0].data})
    rollouts = rollout(session, context, merged)
    batches = rollouts.batches
    loss_sum = partial(policy_loss_sum, config=config)
    for _ in range(config.rl.updates_per_batch):
        result = accumulate_gradients(
            session.model, batches, session.accelerator, loss_sum, lm_count
        )
        if not apply_gradients(session, result.loss):
            return False
        # the last update's clip fraction: on the first the ratio is 1 by construction
        rollouts.metrics.update({k: round(v, 5) for k, v in result.metrics.items()})
    state.trained_tokens += sum(lm_count(b) for b in batches)
    session.extra["step_metrics"] = rollouts.metrics
    return True


def rollout(session: Session, context: Context, prompts: Columns) -> Rollouts:
    """Sample and score completions; advantages per prompt group; old and reference log-probs."""
    rl, objective = session.config.rl, session.config.objective
    n = rl.num_generations
    model = session.accelerator.unwrap_model(session.model)
    completions = sample_completions(
        model,
        prompts["prompt_ids"],
        n=n,
        max_new_tokens=rl.max_new_tokens,
        pad_id=session.tokenizer.pad_token_id,
        stop=stop_ids(model, session.tokenizer),
        temperature=rl.temperature,
        top_p=rl.top_p,
    )
    rewards, metrics = _score(session, context, prompts, completions, n)
    batches = _micro_batches(session, *completion_rows(prompts["prompt_ids"], completions, n))
    current = [_logps(session, b) for b in batches] if rl.kl_coef else None
    if rl.updates_per_batch > 1:
        for batch, old in zip(
            batches, current or [_logps(session, b) for b in batches], strict=True
        ):
            batch["old"] = old
    reference = _reference_logps(session, context, batches) if rl.kl_coef else None
    if current is not None and reference is not None:
        for batch, ref in zip(batches, reference, strict=True):
            batch["reference"] = ref
        tokens = max(sum(lm_count(b) for b in batches), 1)
        k3 = _sequence_kl(batches, current, reference, "k3")
        metrics["kl"] = round(float(k3.sum()) / tokens, 5)
        if objective == "rloo":
            rewards = rewards - rl.kl_coef * _sequence_kl(batches, current, reference)
    for batch, value in zip(
        batches, advantages(rewards, n, objective).split(_sizes(batches)), strict=True
    ):
        batch["advantages"] = value
    return Rollouts(batches, metrics)


def _sizes(batches: list[Batch]) -> list[int]:
    return [b["input_ids"].shape[0] for b in batches]


def advantages(rewards: torch.Tensor, n: int, objective: str) -> torch.Tensor:
    """Per-completion advantages within each prompt's group of ``n`` completions.

    GRPO: the reward standardised within the group. RLOO: the reward minus the mean
    of the group's other rewards (leave-one-out baseline).
    """
    groups = rewards.view(-1, n)
    if objective == "rloo":
        others = (groups.sum(1, keepdim=True) - groups) / (n - 1)
        return (groups - others).flatten()
    mean, std = groups.mean(1, keepdim=True), groups.std(1, keepdim=True)
    return ((groups - mean) / (std + STD_EPS)).flatten()


def policy_loss_sum(
    model: Any, batch: Batch, config: Config
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate (+ GRPO's KL term) summed over completion tokens; summed metrics."""
    rl = config.rl
    logits = sequence_logits(model, batch["input_ids"], batch["attention_mask"])
    logps = token_logps(logits, batch["labels"])
    mask = (batch["labels"][:, 1:] != -100).float()
    old = batch.get("old", logps.detach())
    ratio = torch.exp(logps - old)
    advantage = batch["advantages"].unsqueeze(1)
    surrogate = -torch.min(ratio * advantage, ratio.clamp(1 - rl.clip, 1 + rl.clip) * advantage)
    per_token = surrogate
    if config.objective == "grpo" and "reference" in batch:
        gap = batch["reference"] - logps
        per_token = per_token + rl.kl_coef * (torch.exp(gap) - gap - 1)
    clipped = ((ratio - 1).abs() > rl.clip).float()
    return (per_token * mask).sum(), {"clip_fraction": (clipped * mask).sum()}


@torch.no_grad()
def validate_rewards(session: Session, context: Context, prompts: Columns) -> dict[str, float]:
    """Held-out prompts: mean reward of sampled replies, KL per token, length; greedy reward.

    ``rl.num_generations`` replies per prompt are sampled as in training, from a random
    stream seeded by ``seed`` alone (so every validation draws alike and training's
    stream is left untouched): ``reward`` is the expected reward RL maximises.
    ``greedy_reward`` scores one greedy reply per prompt.
    """
    if not len(prompts) or context.rewarder is None:
        return {}
    rl = session.config.rl
    model = session.accelerator.unwrap_model(session.model)
    options = {
        "max_new_tokens": rl.max_new_tokens,
        "pad_id": session.tokenizer.pad_token_id,
        "stop": stop_ids(model, session.tokenizer),
    }
    dev = session.accelerator.device
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(session.config.seed)
        completions = sample_completions(
            model,
            prompts["prompt_ids"],
            n=rl.num_generations,
            temperature=rl.temperature,
            top_p=rl.top_p,
            **options,
        )
    greedy = sample_completions(model, prompts["prompt_ids"], n=1, greedy=True, **options)
    greedy_rewards, _ = _score(session, context, prompts, greedy, 1)
    n = rl.num_generations
    rewards, _ = _score(session, context, prompts, completions, n)
    batches = _micro_batches(session, *completion_rows(prompts["prompt_ids"], completions, n))
    lengths = [len(c) for c in completions]
    reward = float(rewards.mean())
    values = {
        "loss": -reward,
        "reward": reward,
        "greedy_reward": float(greedy_rewards.mean()),
        "length": sum(lengths) / len(lengths),
    }
    reference = _reference_logps(session, context, batches)
    if reference is not None:
        tokens = max(sum(lm_count(b) for b in batches), 1)
        current = [_logps(session, b) for b in batches]
        kl = _sequence_kl(batches, current, reference, "k3").sum() / tokens
        values["kl"] = float(kl)
    return values


def _score(
    session: Session, context: Context, prompts: Columns, completions: list[list[int]], n: int
) -> tuple[torch.Tensor, dict[str, float]]:
    assert context.rewarder is not None
    texts = session.tokenizer.batch_decode(completions, skip_special_tokens=True)
    texts = [t.strip() for t in texts]
    messages = [json.loads(p) for p in prompts["prompt"] for _ in range(n)]
    references = [r for r in prompts["reference"] for _ in range(n)]
    rewards, means = context.rewarder(messages, texts, references)
    lengths = [len(c) for c in completions]
    metrics = {
        "reward": round(float(rewards.mean()), 5),
        "reward_std": round(float(rewards.std()) if len(rewards) > 1 else 0.0, 5),
        "completion_length": round(sum(lengths) / len(lengths), 2),
        **{k: round(v, 5) for k, v in means.items()},
    }
    return rewards, metrics


def _micro_batches(session: Session, ids: list[list[int]], labels: list[list[int]]) -> list[Batch]:
    """Right-padded micro-batches of ``train.batch_size`` rows."""
    size, pad = session.config.train.batch_size, session.tokenizer.pad_token_id
    return [
        collate(ids[start : start + size], labels[start : start + size], pad)
        for start in range(0, len(ids), size)
    ]


@torch.no_grad()
def _logps(session: Session, batch: Batch, model: Any = None) -> torch.Tensor:
    """Per-token log-probs of a micro-batch under ``model`` (default: the policy, eval mode)."""
    model = model if model is not None else session.model
    was_training = model.training
    model.eval()
    batch = to_device(batch, session.accelerator.device)
    logits = sequence_logits(model, batch["input_ids"], batch["attention_mask"])
    model.train(was_training)
    return token_logps(logits, batch["labels"]).cpu()


def _reference_logps(
    session: Session, context: Context, batches: list[Batch]
) -> list[torch.Tensor] | None:
    """Per-token reference log-probs: the adapter switched off, or the frozen copy.

    None for full/freeze training without a reference copy (``rl.kl_coef`` 0).
    """
    switch: AbstractContextManager[Any] = nullcontext()
    if context.reference_model is None:
        if not is_peft(session.config.method):
            return None
        switch = session.accelerator.unwrap_model(session.model).disable_adapter()
    with switch:
        return [_logps(session, b, context.reference_model) for b in batches]


def _sequence_kl(
    batches: list[Batch],
    policy: list[torch.Tensor],
    reference: list[torch.Tensor],
    estimator: str = "k1",
) -> torch.Tensor:
    """Per-completion KL to the reference, summed over its tokens.

    ``k1`` is the plain log-ratio (RLOO's penalty); ``k3`` the non-negative
    ``exp(ref - pi) - (ref - pi) - 1`` that GRPO's loss uses and the metrics report.
    """
    values = []
    for batch, current, ref in zip(batches, policy, reference, strict=True):
        mask = (batch["labels"][:, 1:] != -100).float()
        gap = ref - current
        per_token = gap.neg() if estimator == "k1" else torch.exp(gap) - gap - 1
        values.append((per_token * mask).sum(1))
    return torch.cat(values)
