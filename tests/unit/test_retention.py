"""Retention: passages from the bundled text and user files, tuned/base ratios, reply loss."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tuneforge.config.eval_schema import RetentionConfig
from tuneforge.errors import DataError
from tuneforge.eval.evaluate import build_examples, prompt_and_reference
from tuneforge.eval.likelihood import mean_nll, row_nll, text_rows
from tuneforge.eval.retention import compare_retention, retention_passages


def test_bundled_and_user_passages(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("First paragraph\nstill first.\n\nSecond one.\n")
    (tmp_path / "web.jsonl").write_text('{"text": "a page"}\n\n{"text": "another"}\n')
    spec = RetentionConfig(texts=[str(tmp_path / "notes.txt"), str(tmp_path / "web.jsonl")])
    found = retention_passages(spec)
    assert len(found["general"]) == 24 and all(len(p.split()) > 40 for p in found["general"])
    assert found["notes"] == ["First paragraph still first.", "Second one."]
    assert found["web"] == ["a page", "another"]
    capped = retention_passages(RetentionConfig(max_passages=3, bundled=True))
    assert list(capped) == ["general"] and len(capped["general"]) == 3


def test_bad_retention_files_name_the_file_and_line(tmp_path: Path) -> None:
    missing = RetentionConfig(bundled=False, texts=[str(tmp_path / "none.txt")])
    with pytest.raises(DataError, match=r"none\.txt does not exist"):
        retention_passages(missing)
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"body": "no text"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: .*'text'"):
        retention_passages(RetentionConfig(bundled=False, texts=[str(tmp_path / "bad.jsonl")]))


def test_ratios_are_token_weighted_perplexity_ratios() -> None:
    tuned = {
        "perplexity": {
            "a": {"nll": 2.0, "tokens": 100, "ppl": math.exp(2.0)},
            "b": {"nll": 3.0, "tokens": 300, "ppl": math.exp(3.0)},
        }
    }
    base = {
        "perplexity": {
            "a": {"nll": 1.9, "tokens": 100, "ppl": math.exp(1.9)},
            "b": {"nll": 3.0, "tokens": 300, "ppl": math.exp(3.0)},
        }
    }
    found = compare_retention(tuned, base)
    assert found["sources"]["a"]["ppl_ratio"] == round(math.exp(0.1), 4)
    assert found["sources"]["b"]["ppl_ratio"] == 1.0
    assert found["ppl_ratio"] == round(math.exp(0.1 * 100 / 400), 4)


def test_lm_eval_scores_become_ratios_and_gateable_values() -> None:
    from tuneforge.eval.assemble import flat_values

    one = {"perplexity": {"general": {"nll": 2.0, "tokens": 10, "ppl": 7.389}}}
    tuned = {**one, "lm_eval": {"mc": {"acc": 0.45}}}
    base = {**one, "lm_eval": {"mc": {"acc": 0.5}}}
    comparison = compare_retention(tuned, base)
    assert comparison["lm_eval"]["mc"]["acc"] == {"base": 0.5, "tuned": 0.45, "ratio": 0.9}
    report = {
        "metrics": {"tuned": {"loss": 1.0}, "base": {"loss": 2.0}},
        "retention": {"tuned": tuned, "base": base, "comparison": comparison},
    }
    values = flat_values(report, {"tuned": {}, "base": {}})
    assert values["tuned"]["retention.lm_eval.mc.acc_ratio"] == 0.9
    assert values["base"]["retention.lm_eval.mc.acc"] == 0.5
    assert values["tuned"]["retention.ppl_ratio"] == 1.0
    assert "retention.ppl_ratio" not in values["base"]


def test_tool_call_references_and_text_records() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    record = {
        "messages": [
            {"role": "user", "content": "call f"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
        ]
    }
    prompt, reference, calls = prompt_and_reference(record)
    assert prompt == record["messages"][:1]
    assert calls == [{"name": "f", "arguments": {"x": 1}}]
    assert json.loads(reference) == calls
    examples = build_examples([{"id": "t", "text": "raw text"}, {"id": "c", **record}])
    assert examples.texts == ["raw text"] and len(examples.prompts) == 1


def test_row_nll_equals_a_direct_forward_pass(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    texts = ["The river crossed the plain.", "Bread rises because yeast makes gas in the dough."]
    rows = text_rows(tokenizer, texts, 64)
    batched = row_nll(model, rows, batch_size=2)
    for (ids, _), (nll, count) in zip(rows, batched, strict=True):
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, :-1]
        direct = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum")
        assert count == len(ids) - 1
        assert nll == pytest.approx(float(direct), rel=1e-4)
    pooled = sum(n for n, _ in batched) / sum(c for _, c in batched)
    assert mean_nll(batched) == pytest.approx(pooled)


def test_public_general_text_reads_as_passages(public_fixtures: Path) -> None:
    spec = RetentionConfig(
        bundled=False,
        max_passages=500,
        texts=[str(public_fixtures / "wiki_demo.txt"), str(public_fixtures / "c4_demo.jsonl")],
    )
    found = retention_passages(spec)
    assert len(found["wiki_demo"]) == 30  # one article per line
    assert len(found["c4_demo"]) == 300
    assert all(p.strip() for p in found["wiki_demo"] + found["c4_demo"])
