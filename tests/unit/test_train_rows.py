"""Training rows: the resumable micro-batch stream, replay mixing, sharding, checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tuneforge.errors import ConfigError
from tuneforge.train.checkpoint import (
    TrainState,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from tuneforge.train.rows import MicroBatches, Rows


def _rows(n: int, start: int = 10) -> Rows:
    ids = [[start + i] * (2 + i % 5) for i in range(n)]
    return Rows(ids, [list(r) for r in ids])


def _first_tokens(batch: dict[str, torch.Tensor]) -> list[int]:
    return batch["input_ids"][:, 0].tolist()


def test_every_row_is_visited_once_per_epoch_in_a_seeded_order() -> None:
    rows = _rows(10)
    stream = MicroBatches(rows, batch_size=3, seed=1, pad_id=0)
    assert stream.per_epoch == 4
    epoch0 = [t for _ in range(4) for t in _first_tokens(next(stream))]
    epoch1 = [t for _ in range(4) for t in _first_tokens(next(stream))]
    assert sorted(epoch0) == sorted(epoch1) == list(range(10, 20))
    assert epoch0 != epoch1  # reshuffled each epoch
    again = MicroBatches(rows, batch_size=3, seed=1, pad_id=0)
    assert [t for _ in range(4) for t in _first_tokens(next(again))] == epoch0


def test_seek_continues_exactly_where_a_stream_was() -> None:
    rows = _rows(11)
    whole = MicroBatches(rows, batch_size=2, seed=5, pad_id=0)
    seen = [_first_tokens(next(whole)) for _ in range(15)]
    first = MicroBatches(rows, batch_size=2, seed=5, pad_id=0)
    for _ in range(8):
        next(first)
    resumed = MicroBatches(rows, batch_size=2, seed=5, pad_id=0)
    resumed.seek(first.epoch, first.offset)
    assert [_first_tokens(next(resumed)) for _ in range(7)] == seen[8:]


def test_replay_rows_make_up_the_configured_share_of_each_epoch() -> None:
    train, replay = _rows(30), _rows(5, start=100)
    stream = MicroBatches(
        train, batch_size=4, seed=2, pad_id=0, replay=replay, replay_fraction=0.25
    )
    assert stream.replay_count == 10  # 10 / (30 + 10) = 0.25
    tokens = [t for _ in range(stream.per_epoch) for t in _first_tokens(next(stream))]
    assert len(tokens) == 40
    assert sum(t >= 100 for t in tokens) == 10
    assert sorted(t for t in tokens if t < 100) == list(range(10, 40))


def test_ranks_split_each_global_batch_without_overlap() -> None:
    rows = _rows(16)
    shards = [MicroBatches(rows, 2, seed=3, pad_id=0, rank=r, world=2) for r in range(2)]
    single = MicroBatches(rows, 4, seed=3, pad_id=0)
    for _ in range(single.per_epoch):
        together = sorted(t for s in shards for t in _first_tokens(next(s)))
        assert together == sorted(_first_tokens(next(single)))


def test_packed_rows_collate_with_a_block_causal_mask() -> None:
    rows = Rows([[1, 2, 3, 4, 5]], [[-100, 2, 3, -100, 5]], [[0, 1, 2, 0, 1]], [[3, 2]])
    batch = next(MicroBatches(rows, 1, seed=0, pad_id=0))
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    mask = batch["attention_mask"][0, 0] == 0
    assert mask[3].tolist() == [False, False, False, True, False]  # sample 2 cannot see sample 1


def _model_and_optimizer(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))
    model[0].weight.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (1 + s))
    return model, optimizer, scheduler


def _step(model, optimizer, scheduler) -> float:
    loss = model(torch.randn(3, 4)).pow(2).mean()
    loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()
    return loss.item()


def test_checkpoint_resume_replays_the_same_steps(tmp_path: Path) -> None:
    model, optimizer, scheduler = _model_and_optimizer(0)
    for _ in range(3):
        _step(model, optimizer, scheduler)
    state = TrainState(step=3, epoch=1, offset=2, losses=[1.0, 0.5, 0.25])
    path = save_checkpoint(tmp_path, model, optimizer, scheduler, state, key="k", keep=2)
    expected = [_step(model, optimizer, scheduler) for _ in range(3)]
    final = {k: v.clone() for k, v in model.state_dict().items()}

    fresh, fresh_optimizer, fresh_scheduler = _model_and_optimizer(99)
    fresh[0].weight.data.copy_(model[0].weight.data)  # frozen weights come from the base
    restored = load_checkpoint(path, fresh, fresh_optimizer, fresh_scheduler, key="k")
    assert restored == state
    assert [_step(fresh, fresh_optimizer, fresh_scheduler) for _ in range(3)] == expected
    for name, value in fresh.state_dict().items():
        assert torch.equal(value, final[name]), name


def test_only_complete_checkpoints_count_and_old_ones_are_pruned(tmp_path: Path) -> None:
    model, optimizer, scheduler = _model_and_optimizer(0)
    for step in (2, 4, 6):
        state = TrainState(step=step, best_step=2)
        save_checkpoint(tmp_path, model, optimizer, scheduler, state, key="k", keep=1)
    (tmp_path / ".step-8.tmp").mkdir()  # a save killed half-way
    assert sorted(p.name for p in tmp_path.iterdir()) == [".step-8.tmp", "step-2", "step-6"]
    assert latest_checkpoint(tmp_path) == tmp_path / "step-6"
    with pytest.raises(ConfigError, match="different training config"):
        load_checkpoint(tmp_path / "step-6", model, optimizer, scheduler, key="other")
