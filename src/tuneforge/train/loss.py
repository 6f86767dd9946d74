"""Loss math shared by every recipe: causal shift, masking, normalisation by trained tokens.

Summing per-token losses and dividing by the number of trained tokens in the
whole optimizer step (not by the number of micro-batches) is what makes
gradient accumulation equal to one big batch for variable-length samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Sum of next-token cross-entropy over labelled positions.

    Args:
        logits: ``[batch, seq, vocab]``.
        labels: ``[batch, seq]`` aligned with the inputs; IGNORE_INDEX marks untrained tokens.

    Returns:
        (loss sum as a 0-d tensor, number of trained tokens).
    """
    shifted_logits = logits[:, :-1, :].float()
    shifted_labels = labels[:, 1:]
    count = int((shifted_labels != IGNORE_INDEX).sum())
    loss = F.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.size(-1)),
        shifted_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss, count


def trained_tokens(labels: torch.Tensor) -> int:
    """How many positions of a label batch carry loss after the causal shift."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[batch, seq - 1]`` log-prob of each next labelled token (0 where the label is ignored).

    The token's logit minus the log-sum-exp of its row: unlike a full ``log_softmax``,
    this keeps no extra ``[batch, seq, vocab]`` tensor for the backward pass.
    """
    logits, labels = logits[:, :-1], labels[:, 1:]
    mask = labels != IGNORE_INDEX
    picked = torch.gather(logits, 2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked.float() - torch.logsumexp(logits.float(), dim=-1)) * mask
