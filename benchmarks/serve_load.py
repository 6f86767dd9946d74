"""Serving load: the local batching engine against one request at a time, under concurrent clients.

Usage: ``python benchmarks/serve_load.py [--work DIR] [--clients C] [--requests N]
[--max-new-tokens M] [--adapters A] [--repeats R] [--threads T]`` (defaults: about 2 minutes on
2 quiet CPU cores, plus 2-4 minutes to build the model the first time; ``--work`` keeps it).

Engine level: no HTTP, no response cache (the HTTP app's benchmark adds those). Model: the
quickstart's tiny Llama (``model.tiny`` of ``examples/quickstart.yaml``: hidden 128, 4 layers,
vocabulary 2,048, 300 steps of pre-training), fp32, built once into ``--work``. Requests: the
first ``--requests`` support tickets of ``examples/data/support_tickets.jsonl`` without their
final assistant reply, greedy, ``--max-new-tokens`` each. ``--clients`` clients (16) each send
their share of the requests one after another, each request as soon as the previous one is
answered, all clients at once.

* **one-at-a-time generate**, the baseline: a server that answers one request at a time
  (an ``asyncio.Lock``), in a worker thread, with the steps of
  :func:`tuneforge.eval.generate.generate` on that request alone (render, ``generate_ids`` with
  batch size 1, decode, strip; its token-level core is called directly to count tokens).
* **batching engine**: :class:`tuneforge.serve.engine.LocalEngine` (continuous batching,
  ``max_batch`` 16, ``batch_window_ms`` 5), the requests rendered by the same function.
* **batching engine, base + A adapters mixed** (``--adapters`` A > 0, default 2): a second
  engine with an adapter registry of A random LoRA adapters (rank 8, every linear layer), the
  requests spread round-robin over the base model and the adapters, so that most forward
  passes mix adapters (PEFT's ``adapter_names``). A separate engine, because a model that
  carries LoRA layers pays for their wrappers even on base-model rows.

Latency is each request's wall time as its client sees it, queueing included; ``p50`` and
``p99`` are over every request of the run. ``tokens`` are generated tokens up to and including
each completion's stop token; ``rows/step`` is the engine's mean rows per forward pass. Each
side runs ``--repeats`` times (in turns) and its fastest run counts, as ``timeit`` does, because
on a shared machine other jobs only ever add time. Greedy completions of the engine are checked
to equal the baseline's. The target: the batching engine serves at least 4x the baseline's
requests per second; the exit status is 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from tuneforge.config import load_config
from tuneforge.config.schema import Config, TinyModelConfig
from tuneforge.console import quiet_libraries
from tuneforge.data.render import prompt_messages, render_prompt_batch
from tuneforge.eval.generate import Sampling, generate_ids, pad_id, stop_ids
from tuneforge.models.load import load_model, load_tokenizer
from tuneforge.models.tiny import build_tiny_model
from tuneforge.serve.engine import LocalEngine
from tuneforge.serve.registry import AdapterRegistry
from tuneforge.serve.types import GenerationRequest
from tuneforge.train.adapters import save_adapter
from tuneforge.train.methods import prepare_model

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DATA = EXAMPLES / "data" / "support_tickets.jsonl"
TARGET = 4.0
BASELINE = "one-at-a-time generate"
ENGINE = "batching engine"
Serve = Callable[[int], Awaitable[tuple[str, int]]]  # request index -> (text, tokens)


def build_model(out: Path, spec: TinyModelConfig) -> dict[str, Any]:
    """The tiny model at ``out``, reused when it was built with the same spec."""
    marker = out / "tiny_model.json"
    if not (marker.is_file() and json.loads(marker.read_text())["spec"] == spec.model_dump()):
        build_tiny_model(out, spec, seed=0)
    return json.loads(marker.read_text())


def build_adapters(model_dir: Path, root: Path, count: int) -> list[str]:
    """``count`` LoRA adapters with random B matrices (so they change replies) under ``root``."""
    names = [f"adapter-{i}" for i in range(count)]
    for seed, name in enumerate(names):
        if (root / name / "adapter_model.safetensors").is_file():
            continue
        method = {"kind": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "adapter_name": name}
        config = Config(
            name="bench", model={"name_or_path": str(model_dir)}, data={"path": "-"}, method=method
        )
        model = prepare_model(str(model_dir), config, torch.float32, torch.device("cpu"))
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param_name, param in model.named_parameters():
                if "lora_B" in param_name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
        save_adapter(model, root / name, name)
    return names


def load_prompts(count: int) -> list[list[dict[str, Any]]]:
    """The first ``count`` support tickets without their final assistant reply."""
    with open(DATA, encoding="utf-8") as handle:
        records = [json.loads(line) for line, _ in zip(handle, range(count), strict=False)]
    return [prompt_messages(record["messages"])[0] for record in records]


async def load_test(serve: Serve, requests: int, clients: int) -> dict[str, Any]:
    """Every request served by ``clients`` concurrent closed-loop clients; texts and latencies."""
    texts: list[str] = [""] * requests
    latencies: list[float] = []
    tokens = 0

    async def client(first: int) -> None:
        nonlocal tokens
        for index in range(first, requests, clients):
            sent = time.perf_counter()
            texts[index], count = await serve(index)
            latencies.append(time.perf_counter() - sent)
            tokens += count

    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "texts": texts, "latencies": latencies, "tokens": tokens}


def baseline_server(model: Any, tokenizer: Any, prompts: list, new: int) -> Serve:
    """One request at a time through eval's generation (in a thread, as a server would).

    The steps of :func:`tuneforge.eval.generate.generate` for one prompt (render, generate,
    decode, strip), with its token-level core called directly so that tokens can be counted.
    """
    lock = asyncio.Lock()
    options = {"pad_id": pad_id(tokenizer), "stop_ids": stop_ids(model, tokenizer)}

    def one(index: int) -> tuple[str, int]:
        ids = render_prompt_batch(tokenizer, [(prompts[index], None)])
        (row,) = generate_ids(model, ids, sampling=Sampling(new), batch_size=1, **options)
        return tokenizer.decode(row, skip_special_tokens=True).strip(), len(row)

    async def serve(index: int) -> tuple[str, int]:
        async with lock:
            return await asyncio.to_thread(one, index)

    return serve


def engine_server(
    engine: LocalEngine, prompt_ids: list[list[int]], adapters: Sequence[str | None], new: int
) -> Serve:
    """The engine, request ``i`` on adapter ``adapters[i % len(adapters)]``."""

    async def serve(index: int) -> tuple[str, int]:
        adapter = adapters[index % len(adapters)]
        request = GenerationRequest(tuple(prompt_ids[index]), adapter=adapter, max_tokens=new)
        choice = (await engine.generate(request)).choices[0]
        return choice.text.strip(), len(choice.token_ids)

    return serve


def table_row(name: str, result: dict[str, Any], requests: int, clients: int) -> dict[str, Any]:
    """One row of the table from one load test."""
    latencies = sorted(result["latencies"])
    return {
        "run": name,
        "clients": clients,
        "requests": requests,
        "tokens": result["tokens"],
        "seconds": result["seconds"],
        "requests/s": requests / result["seconds"],
        "tokens/s": result["tokens"] / result["seconds"],
        "p50 latency s": statistics.median(latencies),
        "p99 latency s": statistics.quantiles(latencies, n=100, method="inclusive")[98],
        "rows/step": result.get("rows/step", 1.0),
    }


async def engine_run(engine: LocalEngine, serve: Serve, args: argparse.Namespace) -> dict:
    """One engine load test, with its mean rows per forward pass."""
    before = engine.stats()
    result = await load_test(serve, args.requests, args.clients)
    after = engine.stats()
    passes = after["forward_passes_total"] - before["forward_passes_total"]
    result["rows/step"] = (after["tokens_total"] - before["tokens_total"]) / passes
    return result


async def measure(model_dir: Path, work: Path, args: argparse.Namespace) -> tuple[list, dict]:
    """Run the baseline and the engines in turns; the fastest run of each, and the checks."""
    tokenizer, model = load_tokenizer(str(model_dir)), load_model(str(model_dir)).eval()
    prompts, new = load_prompts(args.requests), args.max_new_tokens
    prompt_ids = render_prompt_batch(tokenizer, [(p, None) for p in prompts])
    baseline = baseline_server(model, tokenizer, prompts, new)
    engine = LocalEngine(model_dir, max_batch=16, batch_window_ms=5)
    servers = {
        BASELINE: (None, baseline),
        ENGINE: (engine, engine_server(engine, prompt_ids, [None], new)),
    }
    if args.adapters:  # its own engine: the base run above pays no LoRA wrappers
        names = build_adapters(model_dir, work / "adapters", args.adapters)
        mixed = LocalEngine(model_dir, AdapterRegistry(work / "adapters", len(names)))
        serve = engine_server(mixed, prompt_ids, [None, *names], new)
        servers[f"{ENGINE}, base + {len(names)} adapters mixed"] = (mixed, serve)
    try:
        best = await fastest(servers, args)
    finally:
        for running, _ in servers.values():
            if running is not None:
                await running.close()
    base, ours = best[BASELINE]["texts"], best[ENGINE]["texts"]
    checks = {
        "identical": sum(a == b for a, b in zip(base, ours, strict=True)),
        "mean prompt tokens": sum(map(len, prompt_ids)) / len(prompt_ids),
    }
    rows = [table_row(name, result, args.requests, args.clients) for name, result in best.items()]
    return rows, checks


async def fastest(
    servers: dict[str, tuple[LocalEngine | None, Serve]], args: argparse.Namespace
) -> dict[str, dict]:
    """Warm every server up, then load-test each in turns; every server's fastest run."""
    for engine, serve in servers.values():
        if engine is not None:
            await engine.wait_ready(120)
        await asyncio.gather(*(serve(i) for i in range(min(16, args.requests))))
    best: dict[str, dict] = {}
    for _ in range(args.repeats):
        for name, (engine, serve) in servers.items():
            if engine is None:
                result = await load_test(serve, args.requests, args.clients)
            else:
                result = await engine_run(engine, serve, args)
            if name not in best or result["seconds"] < best[name]["seconds"]:
                best[name] = result
    return best


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    """Print rows as a Markdown table."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        cells = [f"{c:,.3f}" if isinstance(c, float) else str(c) for c in row.values()]
        print("| " + " | ".join(cells) + " |")


def report(rows: list[dict], checks: dict, built: dict, args: argparse.Namespace, load: tuple):
    """Print the set-up, the table and the verdict; exit 1 when the target is missed."""
    print(
        f"model: {built['parameters'] / 1e6:.2f}M parameters, pre-trained "
        f"{built['pretrain_steps']} steps; {args.requests} requests "
        f"({checks['mean prompt tokens']:.0f} prompt tokens on average) from {args.clients} "
        f"concurrent clients, max_new_tokens {args.max_new_tokens}, greedy, fp32; torch threads "
        f"{torch.get_num_threads()}, {os.cpu_count()} CPUs; load average {load[0]:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after; fastest of {args.repeats}\n"
    )
    print_table(rows)
    base, ours = rows[0], rows[1]
    ratio = ours["requests/s"] / base["requests/s"]
    print(
        f"\ngreedy completions: {ENGINE} == {BASELINE} on {checks['identical']}/{args.requests} "
        "requests"
    )
    verdict = "met" if ratio >= TARGET else "MISSED"
    print(f"throughput: {ratio:.1f}x {BASELINE} (target >= {TARGET}x): {verdict}")
    if ratio < TARGET:
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="keep the built model and adapters here")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--adapters", type=int, default=2, help="LoRA adapters of the mixed run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side; the fastest counts")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_libraries()
    spec = load_config(EXAMPLES / "quickstart.yaml").model.tiny
    with tempfile.TemporaryDirectory(prefix="tuneforge-bench-") as tmp:
        work = args.work or Path(tmp)
        built = build_model(work / "model", spec)
        load_before = os.getloadavg()
        rows, checks = asyncio.run(measure(work / "model", work, args))
    report(rows, checks, built, args, load_before)


if __name__ == "__main__":
    main()
