"""lm-eval retention tasks from local YAML files, offline, on the tiny model.

lm-eval's numbers are checked against log-probabilities computed here with a
plain forward pass, so a change in how it is wrapped (or in lm-eval) shows.
"""

from __future__ import annotations

import json
import math
import re
import socket
import sys
from pathlib import Path

import pytest
import torch

from tuneforge.errors import ConfigError
from tuneforge.eval.lm_eval_suite import run_lm_eval

pytest.importorskip("lm_eval")

COLOURS = ["red", "blue", "green", "yellow"]
MC_DOCS = [
    {"question": f"What colour is the {thing}?", "choices": COLOURS, "label": i % 4}
    for i, thing in enumerate(["sky", "grass", "sun", "rose", "sea", "leaf", "lemon", "fire"])
]
TEXT_DOCS = [
    "The customer asked for a refund and the agent explained the policy.",
    "Please restart the router, then check whether the light turns green.",
    "Our office is open from nine to five on weekdays.",
]


def _prompt(doc: dict) -> str:
    return f"Question: {doc['question']}\nAnswer:"


def _mc_task(folder: Path, name: str, docs: list[dict]) -> None:
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n  cache_dir: {folder / 'cache'}\n"
        "output_type: multiple_choice\n"
        "test_split: test\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\n'
        "doc_to_choice: choices\n"
        "doc_to_target: label\n"
        "metric_list:\n  - metric: acc\n"
    )


def _perplexity_task(folder: Path, name: str) -> None:
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXT_DOCS))
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n  cache_dir: {folder / 'cache'}\n"
        "output_type: loglikelihood_rolling\n"
        "test_split: test\n"
        'doc_to_text: ""\n'
        'doc_to_target: "{{text}}"\n'
        "metric_list:\n  - metric: word_perplexity\n  - metric: bits_per_byte\n"
    )


def _continuation_logprob(model, tokenizer, context: str, continuation: str) -> float:
    """Summed log p(continuation | context), tokenised as one string then split."""
    context_ids = tokenizer(context).input_ids
    whole = tokenizer(context + continuation).input_ids
    assert whole[: len(context_ids)] == context_ids  # the split falls on a token boundary
    with torch.no_grad():
        logprobs = model(torch.tensor([whole])).logits[0].log_softmax(-1)
    return sum(logprobs[i - 1, whole[i]].item() for i in range(len(context_ids), len(whole)))


def _text_logprob(model, tokenizer, text: str) -> float:
    """Summed log p(text), the first token conditioned on the end-of-text token."""
    ids = [tokenizer.eos_token_id, *tokenizer(text).input_ids]
    with torch.no_grad():
        logprobs = model(torch.tensor([ids])).logits[0].log_softmax(-1)
    return sum(logprobs[i - 1, ids[i]].item() for i in range(1, len(ids)))


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every attempt to open a network connection, refused and recorded."""
    attempts: list = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError(f"network disabled in tests: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return attempts


def test_local_tasks_match_direct_log_probabilities(
    tmp_path: Path, tiny_model_dir: Path, no_network: list
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    scores = [
        [_continuation_logprob(model, tokenizer, _prompt(d), f" {c}") for c in d["choices"]]
        for d in MC_DOCS
    ]
    best = [max(range(len(s)), key=s.__getitem__) for s in scores]
    expected_acc = sum(b == d["label"] for b, d in zip(best, MC_DOCS, strict=True)) / len(MC_DOCS)
    text_ll = sum(_text_logprob(model, tokenizer, t) for t in TEXT_DOCS)
    words = sum(len(re.split(r"\s+", t)) for t in TEXT_DOCS)
    n_bytes = sum(len(t.encode()) for t in TEXT_DOCS)

    _mc_task(tmp_path, "tf_mc", MC_DOCS)
    # The same questions keyed to the model's own favourite: lm-eval must score them all right.
    _mc_task(tmp_path, "tf_mc_own", [d | {"label": b} for d, b in zip(MC_DOCS, best, strict=True)])
    _perplexity_task(tmp_path, "tf_text")

    model.train()  # lm-eval switches to eval mode; the caller's mode must come back
    results = run_lm_eval(
        model, tokenizer, ["tf_mc", "tf_mc_own", "tf_text"], include_path=str(tmp_path)
    )

    assert set(results) == {"tf_mc", "tf_mc_own", "tf_text"}
    assert results["tf_mc"] == {"acc": pytest.approx(expected_acc)}
    assert 0.0 <= results["tf_mc"]["acc"] <= 1.0
    assert results["tf_mc_own"] == {"acc": 1.0}
    assert results["tf_text"]["word_perplexity"] == pytest.approx(
        math.exp(-text_ll / words), rel=1e-4
    )
    assert results["tf_text"]["bits_per_byte"] == pytest.approx(
        -text_ll / n_bytes / math.log(2), rel=1e-4
    )
    assert no_network == []
    assert model.training

    limited = run_lm_eval(model, tokenizer, ["tf_mc"], include_path=str(tmp_path), limit=2)
    first_two = sum(b == d["label"] for b, d in zip(best[:2], MC_DOCS[:2], strict=True)) / 2
    assert limited["tf_mc"]["acc"] == pytest.approx(first_two)


def test_without_lm_eval_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # makes `import lm_eval` fail
    with pytest.raises(ConfigError, match=r"pip install 'tuneforge\[eval\]'"):
        run_lm_eval(None, None, ["tf_mc"], include_path=None)


def test_missing_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"include_path .*nowhere is not a folder"):
        run_lm_eval(None, None, ["tf_mc"], include_path=str(tmp_path / "nowhere"))


def test_unknown_task_names_the_task_and_the_folder(tmp_path: Path) -> None:
    _mc_task(tmp_path, "tf_mc", MC_DOCS)
    with pytest.raises(
        ConfigError,
        match=rf"unknown task 'tf_mcq'.*{re.escape(str(tmp_path))}.*did you mean 'tf_mc'",
    ):
        run_lm_eval(None, None, ["tf_mcq"], include_path=str(tmp_path))
