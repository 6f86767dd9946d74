"""The tiny-model cache under concurrency: processes wanting one model build it once."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

SPEC = {
    "vocab_size": 600,
    "hidden_size": 32,
    "num_layers": 1,
    "num_heads": 2,
    "intermediate_size": 64,
    "corpus_paragraphs": 60,
    "corpus_dialogues": 30,
    "pretrain_steps": 3,
    "pretrain_seq_len": 32,
}


def build(cache: str, out: str, queue) -> None:
    from tuneforge.config.schema import TinyModelConfig
    from tuneforge.models.tiny import cached_tiny_model

    summary = cached_tiny_model(out, TinyModelConfig(**SPEC), 0, key="k1", cache=Path(cache))
    queue.put("copied_from" in summary)


@pytest.mark.slow
def test_concurrent_runs_build_one_model_and_the_others_copy_it(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [
        context.Process(
            target=build, args=(str(tmp_path / "cache"), str(tmp_path / f"run{i}"), queue)
        )
        for i in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(300)
        assert worker.exitcode == 0
    copied = sorted(queue.get(timeout=5) for _ in workers)
    assert copied == [False, True, True]  # one build, two copies
    weights = [(tmp_path / f"run{i}" / "model.safetensors").read_bytes() for i in range(3)]
    assert weights[0] == weights[1] == weights[2]
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")] == ["k1"]
