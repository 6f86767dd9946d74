"""The local engine on the tiny model: batched == alone, mixed adapters, bounds, streams, close."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import torch

from serve_support import make_registry
from tuneforge.data.render import render_prompt_batch
from tuneforge.eval.generate import Sampling, generate_ids, pad_id, stop_ids
from tuneforge.models.load import load_model, load_tokenizer
from tuneforge.serve.engine import LocalEngine
from tuneforge.serve.engine_batch import Row
from tuneforge.serve.registry import AdapterRegistry, AdapterSlotsBusy, InvalidAdapter
from tuneforge.serve.types import (
    EngineUnavailable,
    GenerationRequest,
    QueueFull,
    UnknownAdapter,
)
from tuneforge.train.adapters import load_adapter

NEW = 24
LONG = 400  # tokens: runs for a second or more, so that bounds and cancellation show
QUESTIONS = [
    "Hi.",
    "Can you merge my two accounts, please?",
    "What does pricing look like for a team of 250 people? We also need single sign-on.",
    "The export button does nothing since yesterday's update; I tried two browsers.",
]
ADAPTERS = (None, "alpha", "beta")
CPU = {"device": "cpu", "dtype": torch.float32}  # as the references, whatever the hardware


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coroutine)


async def until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    """Wait for ``condition`` (the worker thread makes it true)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: a 64-wide model gains nothing from more (see test_generate)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def registry_root(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """alpha and beta: LoRA adapters with random B matrices large enough to change replies."""
    return make_registry(tmp_path_factory.mktemp("registry"), tiny_model_dir)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="module")
def prompts(tokenizer) -> list[tuple[int, ...]]:
    conversations = [([{"role": "user", "content": q}], None) for q in QUESTIONS]
    return [tuple(ids) for ids in render_prompt_batch(tokenizer, conversations)]


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path, registry_root: Path):
    engine = LocalEngine(tiny_model_dir, AdapterRegistry(registry_root, max_loaded=2), **CPU)
    run(engine.wait_ready(60))
    yield engine
    run(engine.close())


def reference_model(model_dir: Path, registry_root: Path, adapter: str | None) -> Any:
    """The base model with ``adapter`` alone on it: the eval path, no engine."""
    model = load_model(str(model_dir))
    if adapter is not None:
        model = load_adapter(model, registry_root / adapter, name=adapter)
    return model.eval()


@pytest.fixture(scope="module")
def alone(tiny_model_dir: Path, registry_root: Path, tokenizer, prompts) -> dict:
    """Greedy completions of every prompt, one at a time, by eval's generate_ids."""
    completions = {}
    for adapter in ADAPTERS:
        model = reference_model(tiny_model_dir, registry_root, adapter)
        options = {"pad_id": pad_id(tokenizer), "stop_ids": stop_ids(model, tokenizer)}
        completions[adapter] = [
            generate_ids(model, [p], sampling=Sampling(NEW), batch_size=1, **options)[0]
            for p in prompts
        ]
    return completions


def test_a_mixed_adapter_batch_equals_each_adapter_alone(engine, prompts, alone) -> None:
    requests = [GenerationRequest(p, adapter=a, max_tokens=NEW) for a in ADAPTERS for p in prompts]

    async def all_at_once() -> list:
        return await asyncio.gather(*(engine.generate(r) for r in requests))

    before = engine.stats()
    generations = run(all_at_once())
    after = engine.stats()
    rows_per_pass = (after["tokens_total"] - before["tokens_total"]) / (
        after["forward_passes_total"] - before["forward_passes_total"]
    )
    assert rows_per_pass > 4  # 12 requests of three adapters really shared forward passes
    for request, generation in zip(requests, generations, strict=True):
        expected = alone[request.adapter][prompts.index(request.prompt_ids)]
        assert generation.choices[0].token_ids == expected
    # the adapters change the replies: three different completions of every prompt
    for i in range(len(prompts)):
        assert len({tuple(alone[a][i]) for a in ADAPTERS}) == 3
    # the text, decoded a window at a time as it grew, is the tokenizer's decoding of it all
    for generation in generations:
        choice = generation.choices[0]
        assert choice.text == engine.tokenizer.decode(choice.token_ids, skip_special_tokens=True)
    assert any("\ufffd" in g.choices[0].text for g in generations)  # invalid bytes included


def test_rows_joining_a_running_batch_decode_as_alone(engine, prompts, alone) -> None:
    requests = [GenerationRequest(p, adapter=a, max_tokens=NEW) for p in prompts for a in ADAPTERS]

    async def staggered() -> list:
        tasks = []
        for request in requests:  # each arrives while the earlier ones are decoding
            tasks.append(asyncio.create_task(engine.generate(request)))
            await asyncio.sleep(0.004)
        return await asyncio.gather(*tasks)

    for adapter in ("alpha", "beta"):  # loaded beforehand: admission then takes no time
        run(engine.load_adapter(adapter))
    before = engine.stats()
    generations = run(staggered())
    after = engine.stats()
    passes = after["forward_passes_total"] - before["forward_passes_total"]
    assert (after["tokens_total"] - before["tokens_total"]) / passes > 2
    # none waited for the running rows to end: they joined after a step or two
    assert (
        max(g.timings["queue_s"] for g in generations[1:]) < generations[0].timings["total_s"] / 4
    )
    for request, generation in zip(requests, generations, strict=True):
        expected = alone[request.adapter][prompts.index(request.prompt_ids)]
        assert generation.choices[0].token_ids == expected


def test_seeded_sampling_is_the_same_alone_batched_and_in_eval(
    engine, prompts, tiny_model_dir: Path, registry_root: Path, tokenizer
) -> None:
    sampled = [
        GenerationRequest(p, adapter=a, max_tokens=NEW, temperature=1.0, top_p=0.9, n=3, seed=11)
        for a in (None, "beta")
        for p in prompts[:2]
    ]
    traffic = [GenerationRequest(p, adapter="alpha", max_tokens=NEW) for p in prompts]

    async def scenario() -> tuple[list, list]:
        alone = [await engine.generate(r) for r in sampled]
        batched = await asyncio.gather(*(engine.generate(r) for r in [*traffic, *sampled]))
        return alone, batched[len(traffic) :]

    alone, batched = run(scenario())
    texts = [[c.token_ids for c in g.choices] for g in alone]
    assert texts == [[c.token_ids for c in g.choices] for g in batched]
    assert all(len({tuple(t) for t in choices}) == 3 for choices in texts)  # n distinct streams
    # choice i draws from the stream eval gives prompt i of a call with the same seed
    model = reference_model(tiny_model_dir, registry_root, "beta")
    sampling = Sampling(NEW, temperature=1.0, top_p=0.9, seed=11)
    options = {"pad_id": pad_id(tokenizer), "stop_ids": stop_ids(model, tokenizer)}
    expected = generate_ids(model, [prompts[0]] * 3, sampling=sampling, batch_size=3, **options)
    assert texts[2] == expected
    other = run(engine.generate(GenerationRequest(prompts[0], max_tokens=NEW, temperature=1.0)))
    assert [c.token_ids for c in other.choices] != texts[0][:1]  # no seed: a random one


def test_stream_pieces_concatenate_to_the_generated_text(engine, prompts) -> None:
    request = GenerationRequest(prompts[2], adapter="beta", max_tokens=NEW, stop=("zz",))

    async def scenario() -> tuple[list, Any, Any]:
        stream = engine.stream(request)
        pieces = [delta async for delta in stream]
        return pieces, stream.generation, await engine.generate(request)

    pieces, streamed, generated = run(scenario())
    assert len(pieces) > 3 and all(p.finish_reason is None for p in pieces[:-1])
    assert pieces[-1].finish_reason == generated.choices[0].finish_reason
    assert "".join(p.text for p in pieces) == generated.choices[0].text
    assert streamed.choices[0].token_ids == generated.choices[0].token_ids
    assert streamed.completion_tokens == len(generated.choices[0].token_ids)


def test_pieces_never_split_a_character_nor_show_a_stop_string(tokenizer) -> None:
    text = "Café ☕ costs 3€, the end. More"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    row = Row(None, 0, (1,), None, Sampling(max_new_tokens=100, stop=("end.",)))
    pieces, split_characters = [], 0
    for token in ids:
        row.advance(token, tokenizer, stop_ids=())
        split_characters += row.text.endswith("\ufffd")
        pieces.append(row.take_piece())
        if row.finish:
            break
    assert split_characters >= 2  # the byte-level tokens really split é, ☕ or €
    assert row.finish == "stop" and row.text == "Café ☕ costs 3€, the "
    assert "".join(pieces) == row.text
    assert not any("\ufffd" in piece for piece in pieces)
    assert not any(piece.endswith(("e", "en", "end")) for piece in pieces[:-1])


def test_closing_a_stream_or_cancelling_a_request_frees_its_slot(engine, prompts) -> None:
    async def scenario() -> int:
        cancelled, tokens = engine.stats()["cancelled_total"], engine.stats()["tokens_total"]
        stream = engine.stream(GenerationRequest(prompts[0], max_tokens=LONG))
        pieces = [await anext(stream) for _ in range(3)]
        assert all(piece.text for piece in pieces)
        assert engine.stats()["running"] == 1
        await stream.aclose()
        await until(lambda: engine.stats()["running"] == 0)
        task = asyncio.create_task(engine.generate(GenerationRequest(prompts[1], max_tokens=LONG)))
        await until(lambda: engine.stats()["running"] == 1)
        task.cancel()
        await until(lambda: engine.stats()["running"] == 0)
        dropped = engine.stream(GenerationRequest(prompts[2], max_tokens=LONG))
        async for _ in dropped:  # a consumer that stops reading and lets go of the stream
            break
        del dropped
        await until(lambda: engine.stats()["running"] == 0)
        assert engine.stats()["tokens_total"] - tokens < LONG  # none ran to its end
        return engine.stats()["cancelled_total"] - cancelled

    assert run(scenario()) == 3


def test_queue_bound_timeouts_and_shutdown(tiny_model_dir: Path, prompts) -> None:
    engine = LocalEngine(tiny_model_dir, max_batch=1, max_queue=2, batch_window_ms=0, **CPU)
    long = GenerationRequest(prompts[0], max_tokens=LONG)

    async def scenario() -> None:
        await engine.wait_ready(60)
        first = asyncio.create_task(engine.generate(long))
        await until(lambda: engine.stats()["running"] == 1)
        # waits in the queue past its timeout: cancelled, without waiting for `first`
        late = await engine.generate(GenerationRequest(prompts[1], max_tokens=8, timeout_s=0.1))
        assert late.choices[0].finish_reason == "cancelled" and late.choices[0].token_ids == []
        assert 0.1 <= late.timings["total_s"] < 1 and not first.done()
        waiting = [asyncio.create_task(engine.generate(long)) for _ in range(2)]
        await until(lambda: engine.stats()["queue_depth"] == 2)
        with pytest.raises(QueueFull) as full:
            await engine.generate(long)
        assert full.value.retry_after_s >= 1
        for task in (first, *waiting):
            task.cancel()
        await until(lambda: engine.stats()["queue_depth"] + engine.stats()["running"] == 0)
        # times out while running: the tokens so far, finish reason "cancelled"
        timed = await engine.generate(GenerationRequest(prompts[2], max_tokens=LONG, timeout_s=0.2))
        assert timed.choices[0].finish_reason == "cancelled"
        assert 0 < len(timed.choices[0].token_ids) < LONG
        assert 0.2 <= timed.timings["total_s"] < 1.5
        # shutdown finishes what was accepted, then refuses
        short = GenerationRequest(prompts[3], max_tokens=NEW)
        accepted = [asyncio.create_task(engine.generate(short))]
        await until(lambda: engine.stats()["running"] == 1)
        accepted += [asyncio.create_task(engine.generate(short)) for _ in range(2)]
        await until(lambda: engine.stats()["queue_depth"] == 2)
        await engine.close()
        assert not engine.ready
        finished = await asyncio.gather(*accepted)
        assert [len(g.choices[0].token_ids) for g in finished] == [NEW] * 3
        assert {g.choices[0].finish_reason for g in finished} == {"length"}
        with pytest.raises(EngineUnavailable, match="shutting down"):
            await engine.generate(short)

    run(scenario())


def test_adapters_load_on_demand_least_recently_used_first_out(
    engine, prompts, alone, registry_root: Path
) -> None:
    shutil.copytree(registry_root / "alpha", registry_root / "gamma", dirs_exist_ok=True)
    registry = engine.registry

    async def use(adapter: str) -> list[int]:
        generation = await engine.generate(GenerationRequest(prompts[0], adapter, max_tokens=NEW))
        return generation.choices[0].token_ids

    async def scenario() -> None:
        for name in registry.loaded():
            assert await engine.unload_adapter(name)
        assert registry.loaded() == [] and engine.stats()["loaded_adapters"] == 0
        for name in ("alpha", "beta", "alpha"):
            assert await use(name) == alone[name][0]
        assert registry.loaded() == ["beta", "alpha"]
        assert await use("gamma") == alone["alpha"][0]  # gamma holds alpha's weights
        assert registry.loaded() == ["alpha", "gamma"]  # beta was the least recently used
        assert await use("beta") == alone["beta"][0]  # comes back on demand
        assert registry.loaded() == ["gamma", "beta"]
        # new weights on disk: a new version, loaded on the next use
        version = registry.resolve("gamma").version
        shutil.copy(registry_root / "beta/adapter_model.safetensors", registry_root / "gamma")
        assert registry.resolve("gamma").version != version
        assert await use("gamma") == alone["beta"][0]
        assert not await engine.unload_adapter("alpha")  # not loaded
        ref = await engine.load_adapter("alpha")
        assert ref.name == "alpha" and registry.loaded() == ["gamma", "alpha"]

    run(scenario())
    assert engine.model_names() == [
        engine.name,
        *(f"{engine.name}:{name}" for name in ("alpha", "beta", "gamma")),
    ]


def test_every_slot_held_means_waiting_not_evicting(
    tiny_model_dir: Path, registry_root: Path, prompts, alone
) -> None:
    registry = AdapterRegistry(registry_root, max_loaded=1)
    model = load_model(str(tiny_model_dir)).eval()
    model, _ = registry.load(model, "alpha")
    with pytest.raises(AdapterSlotsBusy, match="all 1 adapter slots are in use"):
        registry.load(model, "beta", held={"alpha"})
    plain = registry.unload(model, "alpha")
    assert not hasattr(plain, "peft_config")  # the last unload gives the plain model back

    engine = LocalEngine(tiny_model_dir, AdapterRegistry(registry_root, max_loaded=1), **CPU)
    requests = [GenerationRequest(prompts[1], a, max_tokens=NEW) for a in ("alpha", "beta")]

    async def scenario() -> list:
        await engine.wait_ready(60)
        try:
            return await asyncio.gather(*(engine.generate(r) for r in requests))
        finally:
            await engine.close()

    first, second = run(scenario())
    assert first.choices[0].token_ids == alone["alpha"][1]
    assert second.choices[0].token_ids == alone["beta"][1]
    assert second.timings["queue_s"] >= first.timings["total_s"] - 0.05  # beta waited


def test_a_model_that_cannot_load_is_never_ready(tiny_model_dir: Path, tmp_path: Path) -> None:
    broken = shutil.copytree(tiny_model_dir, tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    engine = LocalEngine(broken, **CPU)

    async def scenario() -> None:
        with pytest.raises(EngineUnavailable, match=r"'.*broken': cannot load: ") as error:
            await engine.wait_ready(60)
        assert "\n" not in str(error.value) and not engine.ready
        with pytest.raises(EngineUnavailable, match="cannot load"):
            await engine.generate(GenerationRequest((1, 2, 3)))
        await engine.close()

    run(scenario())


def test_requests_are_checked_before_they_queue(engine, prompts) -> None:
    async def refused(request: GenerationRequest, error: type, message: str) -> None:
        with pytest.raises(error, match=message):
            await engine.generate(request)

    async def scenario() -> None:
        await refused(GenerationRequest(prompts[0], "nope"), UnknownAdapter, "'nope'")
        await refused(GenerationRequest(prompts[0], "../alpha"), InvalidAdapter, "'../alpha'")
        await refused(GenerationRequest(()), ValueError, "no tokens")
        await refused(GenerationRequest(prompts[0], n=17), ValueError, "n 17")
        await refused(GenerationRequest(prompts[0], max_tokens=600), ValueError, "context of 512")
        await refused(GenerationRequest(prompts[0], temperature=-1), ValueError, "temperature")
        with pytest.raises(ValueError, match="n 2: streaming"):
            engine.stream(GenerationRequest(prompts[0], n=2))

    run(scenario())
    assert engine.resolve_model(engine.name) is None
    assert engine.resolve_model(f"{engine.name}:beta") == "beta"
    with pytest.raises(UnknownAdapter):
        engine.resolve_model("gpt-4")
    assert engine.stats()["queue_depth"] == 0 and engine.ready
