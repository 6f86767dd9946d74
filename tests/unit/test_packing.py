"""Packing: best-fit-decreasing rows, block-diagonal masks, and packed == unpacked on a model."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tuneforge.data.packing import (
    best_fit_decreasing,
    block_causal_mask,
    collate_packed,
    pack,
    packing_efficiency,
)
from tuneforge.data.render import render_chat
from tuneforge.train.loss import IGNORE_INDEX, token_loss_sum


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(1, 64),
    sizes=st.lists(st.integers(1, 64), max_size=60),
)
def test_bfd_places_every_item_once_and_never_overfills(capacity, sizes) -> None:
    sizes = [min(size, capacity) for size in sizes]
    bins = best_fit_decreasing(sizes, capacity)
    assert sorted(i for members in bins for i in members) == list(range(len(sizes)))
    loads = [sum(sizes[i] for i in members) for members in bins]
    assert all(0 < load <= capacity for load in loads)
    assert len(bins) >= math.ceil(sum(sizes) / capacity)
    # A bin is opened only for an item that fits nowhere, so no two bins could be merged.
    assert all(a + b > capacity for i, a in enumerate(loads) for b in loads[i + 1 :])


def test_bfd_finds_the_optimum_on_a_known_case() -> None:
    # 30 units into bins of 10: the optimum is three full bins; packing in input order
    # (2+5, 4, 7+1, 3, 8) needs five.
    assert best_fit_decreasing([2, 5, 4, 7, 1, 3, 8], 10) == [[6, 0], [3, 5], [1, 2, 4]]


def test_bfd_rejects_items_that_cannot_fit() -> None:
    with pytest.raises(ValueError, match="item 1 has size 11"):
        best_fit_decreasing([3, 11], 10)


def sample(length: int, first: int, untrained: int | None = None) -> tuple[list[int], list[int]]:
    """Ids first, first+1, ...; trained after the first ``untrained`` (default: half)."""
    ids = list(range(first, first + length))
    untrained = length // 2 if untrained is None else untrained
    return ids, [IGNORE_INDEX] * untrained + ids[untrained:]


def test_pack_restarts_positions_and_ignores_each_samples_first_label() -> None:
    samples = [sample(12, 100), sample(6, 200, 0), sample(4, 300, 0), sample(3, 400)]
    packing = pack([s[0] for s in samples], [s[1] for s in samples], seq_len=10)
    assert packing.too_long == [0]
    assert [(row.samples, row.lengths) for row in packing.rows] == [([1, 2], [6, 4]), ([3], [3])]
    first = packing.rows[0]
    assert first.input_ids == [*range(200, 206), *range(300, 304)]
    assert first.position_ids == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
    # fully trained samples: only each sample's first label is dropped
    assert first.labels == [IGNORE_INDEX, *range(201, 206), IGNORE_INDEX, *range(301, 304)]
    assert first.boundaries == [(0, 6), (6, 10)]
    assert packing.efficiency == packing_efficiency(packing.rows) == 13 / 20


def test_packing_efficiency_numbers() -> None:
    def efficiency(lengths: list[int], seq_len: int) -> float:
        return pack([[1] * n for n in lengths], [[1] * n for n in lengths], seq_len).efficiency

    assert efficiency([2, 5, 4, 7, 1, 3, 8], 10) == 1.0
    assert efficiency([6, 6, 6], 10) == 0.6
    # 1210 tokens: 19 rows is the fewest possible
    assert efficiency([(i * 37) % 50 + 5 for i in range(40)], 64) == 1210 / (19 * 64)
    assert packing_efficiency([]) == 0.0


def test_block_causal_mask_is_exact() -> None:
    mask = block_causal_mask([[2, 1], [3]], width=4, dtype=torch.bfloat16)
    assert mask.shape == (2, 1, 4, 4) and mask.dtype == torch.bfloat16
    allowed = (mask[:, 0] == 0).int().tolist()
    assert allowed[0] == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    assert allowed[1] == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 1]]
    assert mask.min().item() == torch.finfo(torch.bfloat16).min


def test_collate_pads_rows_out_of_attention_and_loss() -> None:
    samples = [sample(5, 100), sample(3, 200), sample(4, 300)]
    packing = pack([s[0] for s in samples], [s[1] for s in samples], seq_len=8)
    batch = collate_packed(packing.rows, pad_id=0)
    assert [row.lengths for row in packing.rows] == [[5, 3], [4]]
    assert batch["input_ids"][1].tolist() == [300, 301, 302, 303, 0, 0, 0, 0]
    assert batch["labels"][1].tolist() == [IGNORE_INDEX] * 2 + [302, 303] + [IGNORE_INDEX] * 4
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2], [0, 1, 2, 3, 0, 0, 0, 0]]
    assert batch["attention_mask"].shape == (2, 1, 8, 8)


@pytest.fixture(scope="module")
def dialogues(tiny_model_dir):
    """Twelve chats rendered with the tiny model's tokenizer, packed into rows of 256."""
    from tuneforge.models.corpus import assistant_dialogues
    from tuneforge.models.load import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    # Every other sample is trained on all tokens, so a sample's first label is a real token
    # that packing must drop.
    rendered = [
        render_chat(tokenizer, chat, train_on="all" if i % 2 else "assistant")
        for i, chat in enumerate(assistant_dialogues(seed=3, n=12))
    ]
    packing = pack([r.input_ids for r in rendered], [r.labels for r in rendered], seq_len=256)
    return tokenizer, rendered, packing


def test_packing_rendered_chats_beats_packing_them_in_order(dialogues) -> None:
    _, rendered, packing = dialogues
    lengths = [len(r.input_ids) for r in rendered]
    assert packing.too_long == []
    assert packing.efficiency == sum(lengths) / (len(packing.rows) * 256)
    in_order, room = 0, 0
    for length in lengths:
        if length > room:
            in_order, room = in_order + 1, 256
        room -= length
    assert len(packing.rows) <= in_order
    assert all(len(row.lengths) >= 2 for row in packing.rows)  # the test below needs neighbours


def load_model(model_dir, attn: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=attn).eval()


def compare(model, rendered, packing, keys: tuple[str, ...]) -> dict:
    """One packed forward against each sample alone.

    ``keys`` name the collated inputs, besides ``input_ids``, given to the packed forward.

    Returns:
        ``diffs``: per sample, (max |logit diff|, |mean loss diff|, its slot in its row);
        ``packed`` and ``alone``: (loss sum, trained tokens) of the whole set each way.
    """
    batch = collate_packed(packing.rows, pad_id=0)
    diffs, alone_sum, alone_n = [], 0.0, 0
    with torch.no_grad():
        packed = model(**{key: batch[key] for key in ("input_ids", *keys)}).logits
        packed_sum, packed_n = token_loss_sum(packed, batch["labels"])
        for r, row in enumerate(packing.rows):
            for slot, ((start, end), index) in enumerate(
                zip(row.boundaries, row.samples, strict=True)
            ):
                alone = model(input_ids=torch.tensor([rendered[index].input_ids])).logits
                loss, n = token_loss_sum(alone, torch.tensor([rendered[index].labels]))
                loss_packed, n_packed = token_loss_sum(
                    packed[r : r + 1, start:end], batch["labels"][r : r + 1, start:end]
                )
                assert n == n_packed > 0
                logit_diff = (packed[r, start:end] - alone[0]).abs().max().item()
                diffs.append((logit_diff, abs(loss / n - loss_packed / n).item(), slot))
                alone_sum, alone_n = alone_sum + loss.item(), alone_n + n
    return {"diffs": diffs, "packed": (packed_sum.item(), packed_n), "alone": (alone_sum, alone_n)}


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logits_and_loss_equal_unpacked(tiny_model_dir, dialogues, attn) -> None:
    _, rendered, packing = dialogues
    model = load_model(tiny_model_dir, attn)
    result = compare(model, rendered, packing, ("attention_mask", "position_ids"))
    diffs = result["diffs"]
    assert len(diffs) == len(rendered)
    assert max(d[0] for d in diffs) <= 1e-5
    assert max(d[1] for d in diffs) <= 1e-5
    (packed_sum, packed_n), (alone_sum, alone_n) = result["packed"], result["alone"]
    assert packed_n == alone_n
    assert packed_sum == pytest.approx(alone_sum, rel=1e-6)


def test_without_the_block_mask_packed_samples_see_each_other_on_sdpa(
    tiny_model_dir, dialogues
) -> None:
    _, rendered, packing = dialogues
    model = load_model(tiny_model_dir, "sdpa")
    # transformers infers sample boundaries from restarting position ids only when it is
    # given neither a mask nor a cache, and a forward builds a cache unless use_cache=False.
    diffs = compare(model, rendered, packing, ("position_ids",))["diffs"]
    first_in_row = [d[0] for d in diffs if d[2] == 0]
    later_in_row = [d[0] for d in diffs if d[2] > 0]
    assert max(first_in_row) <= 1e-5  # nothing precedes them, so they are unaffected
    assert min(later_in_row) > 1e-2  # every later sample attends to its predecessors
