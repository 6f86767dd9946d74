"""Training invariants on the tiny model: accumulation equals one batch, packed equals unpacked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from tuneforge.data.packing import collate_packed, pack
from tuneforge.data.render import render_chat_batch
from tuneforge.models.load import load_model, load_tokenizer
from tuneforge.train.batching import collate
from tuneforge.train.loop import accumulate_gradients

QUESTIONS = [
    ("Where is my parcel?", "It left the depot this morning and arrives tomorrow."),
    ("Can I change my address?", "Yes."),
    ("How do I reset my password?", "Open settings, choose security, then reset password."),
    ("Do you ship abroad?", "We ship to most countries in Europe and to Canada."),
    ("Is the kettle in stock?", "It is."),
    ("Can I pay later?", "You can pay within thirty days of delivery at no extra cost."),
    ("What is your phone number?", "Call us on weekdays between nine and five."),
    ("Why was I charged twice?", "The second charge is a hold and disappears in two days."),
]


@pytest.fixture(scope="module")
def rendered(tiny_model_dir: Path):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    conversations = [
        ([{"role": "user", "content": q}, {"role": "assistant", "content": a}], None)
        for q, a in QUESTIONS
    ]
    rows = render_chat_batch(tokenizer, conversations)
    assert len({len(r.input_ids) for r in rows}) > 3  # ragged on purpose
    return tokenizer, rows


def _gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], tol: float) -> None:
    assert a.keys() == b.keys() and a
    worst = max(float((a[n] - b[n]).abs().max()) for n in a)
    assert worst <= tol, worst


def test_accumulating_eight_single_samples_equals_one_batch_of_eight(
    tiny_model_dir: Path, rendered
) -> None:
    tokenizer, rows = rendered
    model = load_model(str(tiny_model_dir))
    accelerator = Accelerator(cpu=True)
    ids, labels = [r.input_ids for r in rows], [r.labels for r in rows]
    pad = tokenizer.pad_token_id
    loss_big, tokens_big, _ = accumulate_gradients(model, [collate(ids, labels, pad)], accelerator)
    big = _gradients(model)
    singles = [collate([i], [lab], pad) for i, lab in zip(ids, labels, strict=True)]
    loss_acc, tokens_acc, _ = accumulate_gradients(model, singles, accelerator)
    _close(big, _gradients(model), 1e-5)
    assert tokens_big == tokens_acc == sum(r.trained_tokens for r in rows)
    assert loss_big == pytest.approx(loss_acc, abs=1e-5)
    # Dividing each micro-batch by its own token count (the 2024 bug) gives a different gradient.
    wrong_loss = sum(accumulate_gradients(model, [b], accelerator)[0] for b in singles) / 8
    assert abs(wrong_loss - loss_big) > 1e-3


def test_packed_rows_train_exactly_like_unpacked_samples(tiny_model_dir: Path, rendered) -> None:
    tokenizer, rows = rendered
    model = load_model(str(tiny_model_dir))
    accelerator = Accelerator(cpu=True)
    ids, labels = [r.input_ids for r in rows], [r.labels for r in rows]
    packing = pack(ids, labels, seq_len=96)
    assert len(packing.rows) < len(rows) and not packing.too_long
    packed_batch = collate_packed(packing.rows, tokenizer.pad_token_id)
    loss_packed, tokens_packed, _ = accumulate_gradients(model, [packed_batch], accelerator)
    packed = _gradients(model)
    plain = collate(ids, labels, tokenizer.pad_token_id)
    loss_plain, tokens_plain, _ = accumulate_gradients(model, [plain], accelerator)
    assert tokens_packed == tokens_plain
    assert loss_packed == pytest.approx(loss_plain, abs=1e-5)
    _close(packed, _gradients(model), 1e-5)


def test_gradient_checkpointing_changes_memory_not_gradients(
    tiny_model_dir: Path, rendered
) -> None:
    tokenizer, rows = rendered
    accelerator = Accelerator(cpu=True)
    batch = collate([r.input_ids for r in rows], [r.labels for r in rows], tokenizer.pad_token_id)
    grads = []
    for checkpointing in (False, True):
        model = load_model(str(tiny_model_dir))
        model.train()
        if checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        accumulate_gradients(model, [batch], accelerator)
        grads.append(_gradients(model))
    _close(grads[0], grads[1], 1e-6)
