"""The math of the preference objectives, as pure functions of log-probabilities and scores.

Every function takes per-sequence values (one per pair or sample) and returns
per-sequence losses, so the caller sums them and divides by the number of pairs
in the whole optimizer step, as the token losses of SFT are divided by tokens.

Notation: ``policy_chosen`` is log pi(y_w | x) summed over the reply's tokens
(``*_mean``: averaged over them), ``reference_*`` the same under the reference
model, ``beta`` the strength of the preference term.

* Bradley-Terry reward model: ``-log sigmoid(r_w - r_l - margin)``.
* DPO (Rafailov et al. 2023) on ``h = (pi_w - ref_w) - (pi_l - ref_l)``:
  sigmoid ``-log sigmoid(beta h)`` (with label smoothing eps:
  ``-(1-eps) log sigmoid(beta h) - eps log sigmoid(-beta h)``), IPO
  ``(h - 1/(2 beta))^2`` (Azar et al. 2023, on per-token mean log-probs), hinge
  ``max(0, 1 - beta h)`` (SLiC).
* ORPO (Hong et al. 2024): ``NLL(y_w) - beta log sigmoid(log odds(y_w) - log odds(y_l))``
  with ``odds(y) = p / (1 - p)`` on the per-token mean probability; no reference.
* SimPO (Meng et al. 2024): ``-log sigmoid(beta (mean pi_w - mean pi_l) - gamma)``
  with ``gamma = gamma_ratio * beta``; no reference.
* KTO (Ethayarajh et al. 2024) on unpaired samples: desirable
  ``w_d (1 - sigmoid(beta (r - z)))``, undesirable ``w_u (1 - sigmoid(beta (z - r)))``
  with ``r = pi - ref`` and ``z`` the reference point (a detached, non-negative
  estimate of the policy-reference KL).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tuneforge.train.loss import IGNORE_INDEX, token_logps

DEFAULT_BETA = {"dpo": 0.1, "orpo": 0.1, "kto": 0.1, "simpo": 2.0}


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence sum of the labelled tokens' log-probabilities, and their number.

    Args:
        logits: ``[batch, seq, vocab]`` aligned with the inputs.
        labels: ``[batch, seq]``; IGNORE_INDEX marks tokens that are not part of the reply.

    Returns:
        (``[batch]`` summed log-probs, ``[batch]`` token counts), after the causal shift.
    """
    return token_logps(logits, labels).sum(-1), (labels[:, 1:] != IGNORE_INDEX).sum(-1)


def bradley_terry_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """Reward-model loss: the chosen reply's score should beat the rejected one's by ``margin``."""
    return -F.logsigmoid(chosen - rejected - margin)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
    variant: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO and its IPO / hinge variants.

    Returns:
        (per-pair losses, chosen rewards, rejected rewards); a reward is
        ``beta * (pi - ref)``, detached.
    """
    h = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)
    if variant == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(
            -beta * h
        )
    elif variant == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    elif variant == "hinge":
        losses = torch.relu(1 - beta * h)
    else:
        raise ValueError(f"unknown DPO variant {variant!r}")
    chosen_rewards = beta * (policy_chosen - reference_chosen).detach()
    rejected_rewards = beta * (policy_rejected - reference_rejected).detach()
    return losses, chosen_rewards, rejected_rewards


def orpo_loss(
    chosen_mean: torch.Tensor, rejected_mean: torch.Tensor, chosen_nll: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ORPO: the chosen reply's NLL plus ``beta`` times the odds-ratio term.

    Args:
        chosen_mean: Per-token mean log-prob of the chosen reply.
        rejected_mean: The same for the rejected reply.
        chosen_nll: Per-token mean NLL of the chosen reply (``-chosen_mean`` usually).
        beta: Weight of the odds-ratio term (lambda in the paper).

    Returns:
        (per-pair losses, chosen rewards, rejected rewards) with rewards ``beta * mean``.
    """
    log_odds = (chosen_mean - rejected_mean) - (
        torch.log1p(-torch.exp(chosen_mean).clamp(max=1 - 1e-6))
        - torch.log1p(-torch.exp(rejected_mean).clamp(max=1 - 1e-6))
    )
    losses = chosen_nll - beta * F.logsigmoid(log_odds)
    return losses, beta * chosen_mean.detach(), beta * rejected_mean.detach()


def simpo_loss(
    chosen_mean: torch.Tensor, rejected_mean: torch.Tensor, beta: float, gamma_ratio: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimPO: length-normalised margin with a target gap ``gamma = gamma_ratio * beta``."""
    losses = -F.logsigmoid(beta * (chosen_mean - rejected_mean) - gamma_ratio * beta)
    return losses, beta * chosen_mean.detach(), beta * rejected_mean.detach()


def kto_loss(
    policy: torch.Tensor,
    reference: torch.Tensor,
    desirable: torch.Tensor,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    reference_point: torch.Tensor | float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """KTO on unpaired samples.

    Args:
        policy: Summed reply log-probs under the policy.
        reference: The same under the reference.
        desirable: Boolean, per sample.
        beta: Sharpness of the value function.
        desirable_weight: Weight of desirable samples' losses.
        undesirable_weight: Weight of undesirable samples' losses.
        reference_point: ``z``; default: the batch's mean log-ratio, detached, at least 0.

    Returns:
        (per-sample losses, per-sample rewards ``beta * (pi - ref)``, detached).
    """
    ratio = policy - reference
    if reference_point is None:
        reference_point = ratio.detach().mean().clamp(min=0)
    good = desirable_weight * (1 - torch.sigmoid(beta * (ratio - reference_point)))
    bad = undesirable_weight * (1 - torch.sigmoid(beta * (reference_point - ratio)))
    return torch.where(desirable, good, bad), beta * ratio.detach()
