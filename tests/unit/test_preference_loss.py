"""The preference losses against hand computations on fixed log-probabilities."""

from __future__ import annotations

import math

import pytest
import torch

from tuneforge.train.preference_loss import (
    bradley_terry_loss,
    dpo_loss,
    kto_loss,
    orpo_loss,
    sequence_logps,
    simpo_loss,
)
from tuneforge.train.rl import advantages


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


PI_W, PI_L, REF_W, REF_L = -10.0, -14.0, -11.0, -12.0  # h = (1) - (-2) = 3


def test_dpo_sigmoid_matches_the_hand_computation() -> None:
    t = lambda v: torch.tensor([v])  # noqa: E731
    losses, good, bad = dpo_loss(t(PI_W), t(PI_L), t(REF_W), t(REF_L), beta=0.1)
    assert float(losses) == pytest.approx(-_log_sigmoid(0.3), abs=1e-6)  # 0.554355
    assert float(losses) == pytest.approx(0.5543552, abs=1e-6)
    assert float(good) == pytest.approx(0.1) and float(bad) == pytest.approx(-0.2)


def test_dpo_label_smoothing_ipo_and_hinge() -> None:
    t = lambda v: torch.tensor([v])  # noqa: E731
    args = (t(PI_W), t(PI_L), t(REF_W), t(REF_L))
    smoothed, _, _ = dpo_loss(*args, beta=0.1, label_smoothing=0.2)
    expected = -0.8 * _log_sigmoid(0.3) - 0.2 * _log_sigmoid(-0.3)
    assert float(smoothed) == pytest.approx(expected, abs=1e-6)
    ipo, _, _ = dpo_loss(*args, beta=0.1, variant="ipo")
    assert float(ipo) == pytest.approx((3 - 5) ** 2)  # (h - 1/(2 beta))^2 = 4
    hinge, _, _ = dpo_loss(*args, beta=0.1, variant="hinge")
    assert float(hinge) == pytest.approx(0.7)  # max(0, 1 - 0.3)
    hinge_met, _, _ = dpo_loss(*args, beta=1.0, variant="hinge")
    assert float(hinge_met) == 0.0
    with pytest.raises(ValueError, match="unknown DPO variant"):
        dpo_loss(*args, beta=0.1, variant="nope")


def test_dpo_at_the_reference_is_log_two_and_its_gradient_prefers_chosen() -> None:
    chosen = torch.tensor([-5.0], requires_grad=True)
    rejected = torch.tensor([-5.0], requires_grad=True)
    losses, _, _ = dpo_loss(chosen, rejected, torch.tensor([-5.0]), torch.tensor([-5.0]), 0.1)
    assert float(losses) == pytest.approx(math.log(2))
    losses.sum().backward()
    assert float(chosen.grad) == pytest.approx(-0.05)  # -beta * sigmoid(0)
    assert float(rejected.grad) == pytest.approx(0.05)


def test_bradley_terry_with_and_without_margin() -> None:
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    assert bradley_terry_loss(chosen, rejected).tolist() == pytest.approx(
        [-_log_sigmoid(1.0), -_log_sigmoid(-1.0)]  # 0.313262, 1.313262
    )
    with_margin = bradley_terry_loss(chosen, rejected, torch.tensor([0.5, 0.0]))
    assert with_margin.tolist() == pytest.approx([-_log_sigmoid(0.5), -_log_sigmoid(-1.0)])


def test_orpo_and_simpo() -> None:
    w, lose = torch.tensor([-0.5]), torch.tensor([-1.5])
    p_w, p_l = math.exp(-0.5), math.exp(-1.5)
    log_odds = math.log(p_w / (1 - p_w)) - math.log(p_l / (1 - p_l))
    losses, good, bad = orpo_loss(w, lose, -w, beta=0.1)
    assert float(losses) == pytest.approx(0.5 - 0.1 * _log_sigmoid(log_odds), abs=1e-6)
    assert float(good) == pytest.approx(-0.05) and float(bad) == pytest.approx(-0.15)
    simpo, _, _ = simpo_loss(w, lose, beta=2.0, gamma_ratio=0.5)
    assert float(simpo) == pytest.approx(-_log_sigmoid(2.0 * 1.0 - 1.0), abs=1e-6)


def test_kto_desirable_and_undesirable_with_a_given_reference_point() -> None:
    policy = torch.tensor([-4.0, -6.0])
    reference = torch.tensor([-5.0, -5.0])  # ratios +1, -1
    desirable = torch.tensor([True, False])
    losses, rewards = kto_loss(policy, reference, desirable, 0.5, 1.0, 2.0, reference_point=0.25)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert losses.tolist() == pytest.approx([1 - sig(0.5 * 0.75), 2 * (1 - sig(0.5 * 1.25))])
    assert rewards.tolist() == pytest.approx([0.5, -0.5])
    # default reference point: the batch's mean ratio (0 here), never below 0
    default, _ = kto_loss(policy, reference, desirable, 0.5)
    assert default.tolist() == pytest.approx([1 - sig(0.5), 1 - sig(0.5)])


def test_sequence_logps_sum_only_the_labelled_tokens() -> None:
    logits = torch.zeros(1, 4, 3)  # uniform over 3 tokens
    logits[0, 1, 2] = 10.0  # position 1 predicts token 2 almost surely
    labels = torch.tensor([[-100, -100, 2, 0]])
    total, count = sequence_logps(logits, labels)
    expected = math.log(math.exp(10) / (math.exp(10) + 2)) + math.log(1 / 3)
    assert int(count) == 2
    assert float(total) == pytest.approx(expected, abs=1e-5)


def test_group_advantages() -> None:
    rewards = torch.tensor([1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 0.0, 0.0])
    grpo = advantages(rewards, 4, "grpo")
    first = torch.tensor([1.0, 2.0, 3.0, 6.0])
    expected = (first - first.mean()) / (first.std() + 1e-4)
    assert grpo[:4].tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    assert grpo[4:].tolist() == [0.0] * 4  # a group with equal rewards teaches nothing
    rloo = advantages(rewards, 4, "rloo")
    assert rloo[:4].tolist() == pytest.approx([1 - 11 / 3, 2 - 10 / 3, 3 - 3, 6 - 2])
