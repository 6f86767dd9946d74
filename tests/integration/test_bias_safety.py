"""Bias probes and the red-team suite on the project's tiny model: shapes and invariants."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tuneforge.data.render import render_prompt
from tuneforge.eval.bias import ProbeGroup, ProbeTemplate, load_probes, run_bias_probes
from tuneforge.eval.refusal import is_refusal
from tuneforge.eval.safety import (
    BLOCK_REASONS,
    load_classifier,
    load_red_team,
    run_safety_suite,
)
from tuneforge.models.load import load_model, load_tokenizer


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    return load_model(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))


def _direct_mean_logp(model, tokenizer, prompt: str, continuation: str) -> float:
    """The continuation's mean log-prob from one unpadded forward pass."""
    prompt_ids = render_prompt(tokenizer, [{"role": "user", "content": prompt}])
    reply_ids = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + reply_ids])
    with torch.no_grad():
        logps = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    picked = [logps[len(prompt_ids) + i - 1, t] for i, t in enumerate(reply_ids)]
    return float(sum(picked) / len(picked))


def test_bias_probes(tiny) -> None:
    model, tokenizer = tiny
    same = ProbeGroup(
        "same",
        ({"who": "student"}, {"who": "student"}),
        (ProbeTemplate("t", "Describe a {who}.", "The {who} is kind."),),
    )
    swapped = ProbeGroup(
        "swapped",
        ({"who": "man"}, {"who": "woman"}),
        (ProbeTemplate("t", "Describe a {who} at work.", "The {who} is kind."),),
    )
    probes = [*load_probes(), same, swapped]
    result = run_bias_probes(model, tokenizer, probes, max_new_tokens=8, top_k=100)
    json.dumps(result)  # the report is JSON
    assert result["prompts"] == sum(g.prompts for g in probes)
    assert result["pairs"] == 55 + 1 + 1
    assert set(result["by_group"]) == {g.name for g in probes}
    assert 0 <= result["divergence"] <= result["max_divergence"] <= 1
    assert 0 <= result["likelihood_gap"] <= result["max_likelihood_gap"]
    assert result["by_group"]["same"] == {
        "pairs": 1,
        "divergence": 0.0,
        "max_divergence": 0.0,
        "likelihood_gap": 0.0,
        "max_likelihood_gap": 0.0,
    }
    ranked = result["largest_likelihood_gap"]
    assert [p["likelihood_gap"] for p in ranked] == sorted(
        (p["likelihood_gap"] for p in ranked), reverse=True
    )
    assert len(result["largest_divergence"]) == result["pairs"]

    (pair,) = [p for p in ranked if p["group"] == "swapped"]
    assert pair["variants"] == ["man", "woman"]
    assert pair["prompts"] == ["Describe a man at work.", "Describe a woman at work."]
    assert pair["continuations"] == ["The man is kind.", "The woman is kind."]
    texts = zip(pair["prompts"], pair["continuations"], strict=True)
    direct = [_direct_mean_logp(model, tokenizer, prompt, reply) for prompt, reply in texts]
    assert pair["logps"] == pytest.approx(direct, abs=1e-4)
    assert pair["likelihood_gap"] == pytest.approx(abs(direct[0] - direct[1]), abs=2e-4)


def test_safety_suite(tiny, tmp_path: Path) -> None:
    model, tokenizer = tiny
    prompts = load_red_team()
    result = run_safety_suite(model, tokenizer, prompts, max_new_tokens=8, max_examples=100)
    json.dumps(result)
    assert result["prompts"] == len(prompts) == len(result["examples"])
    outputs = [row["output"] for row in result["examples"]]
    share = sum(map(is_refusal, outputs)) / len(outputs)
    assert result["refusal_rate"] == pytest.approx(share, abs=1e-4)
    assert set(result["blocked_by"]) == set(BLOCK_REASONS)
    assert result["blocked_by"]["classifier"] == 0.0
    assert sum(c["prompts"] for c in result["categories"].values()) == len(prompts)
    # worst first: blocked, then not refused, then refused
    order = [(not row["blocked"], row["refused"]) for row in result["examples"]]
    assert order == sorted(order)

    # a refusal pattern that matches every reply, and a classifier that flags everything
    (tmp_path / "flag_all.py").write_text("def score(text):\n    return 1.0\n")
    flag_all = load_classifier(f"{tmp_path}/flag_all.py:score")
    few = prompts[:4]
    flagged = run_safety_suite(
        model,
        tokenizer,
        few,
        max_new_tokens=4,
        classifier=flag_all,
        refusal_patterns=[r"^"],
        max_examples=2,
    )
    assert flagged["blocked_rate"] == 1.0
    assert flagged["blocked_by"]["classifier"] == 1.0
    assert flagged["refusal_rate"] == 1.0
    assert len(flagged["examples"]) == 2
