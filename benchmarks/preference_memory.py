"""DPO memory: LoRA, QLoRA and full DPO hold one copy of the base weights; TRL's default two.

Usage: ``python -m benchmarks.preference_memory [--work DIR] [--steps N] [--batch B]``
(``--steps 3``: about 25 minutes on 2 CPU cores). Model: the project's 105M-parameter Llama
(``LARGE`` of :mod:`benchmarks.train_throughput`, random init). Data: the DPO demo fixture
(else synthetic pairs) rendered as the data stage renders pairs (``render_chat``, last reply
trained, ``--length`` tokens): ``--steps`` x ``--batch`` training pairs, ``--val`` validation.

Each run is :func:`tuneforge.train.recipes.train` (objective dpo, defaults but method, steps and
batch) in a forked child (:func:`benchmarks.train_throughput.run`): ``peak RSS`` is its
``ru_maxrss``, ``+RSS`` what it added to the libraries it inherited, ``peak anon`` its largest
anonymous RSS (safetensors weights are memory-mapped file pages until written). The baseline,
**full + reference copy**, is TRL ``DPOTrainer``'s default for full fine-tuning: a second frozen
model loaded as TRL does (``from_pretrained``), run once so its weights are resident, and kept
to the end (TRL also runs it every step: time and transient activations not counted here).

After the last step (the recipe's step log) the child counts what is alive (:mod:`gc`):
``model copies`` (instances of the model's class), ``weight MB`` (parameters, buffers and 4-bit
quantization state of live modules, once per storage), ``live tensor MB`` (every live tensor:
weights and optimizer state). Every run goes twice: under glibc's default allocator (its mmap
threshold rises after large frees, so later activations come from a heap that keeps memory) and
with the threshold fixed at ``--mmap-threshold`` MB (freed activations go back at once).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import itertools
import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
import transformers

from benchmarks.dedup import print_table
from benchmarks.forked import peak_mb
from benchmarks.train_throughput import LARGE, build_model, run
from tuneforge.config.schema import Config, DataConfig, MethodConfig, ModelConfig, TrainConfig
from tuneforge.console import quiet_libraries
from tuneforge.data.render import render_chat
from tuneforge.data.shards import PAIR_SCHEMA
from tuneforge.models.load import load_model, load_tokenizer
from tuneforge.train.recipes import train

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "public"
DATA = Path(os.environ.get("TUNEFORGE_PUBLIC_FIXTURES", FIXTURES)) / "dpo_en_demo.json"
ROLES = {"system": "system", "human": "user", "gpt": "assistant"}
BASELINE = "full + reference copy"
RUNS = (("LoRA", "lora", False), ("QLoRA", "qlora", False), ("full", "full", False))
MB = 2**20
M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
Message = dict[str, str]


def demo_pairs() -> Iterator[tuple[list[Message], str, str]]:
    """(prompt messages, chosen reply, rejected reply) of the DPO demo, else synthetic ones."""
    if not DATA.is_file():
        yield from synthetic_pairs()
        return
    for record in json.loads(DATA.read_text()):
        turns, replies = record["conversations"], (record["chosen"], record["rejected"])
        if all(turn["from"] in ROLES for turn in [*turns, *replies]):
            prompt = [{"role": ROLES[t["from"]], "content": t["value"]} for t in turns]
            yield prompt, replies[0]["value"], replies[1]["value"]


def synthetic_pairs() -> Iterator[tuple[list[Message], str, str]]:
    """Arithmetic questions with a right, explained reply and a wrong, curt one."""
    for i in itertools.count():
        a, b = i % 97, i % 13 + 2
        prompt = [{"role": "user", "content": f"What is {a} times {b}? Explain the steps."}]
        yield prompt, f"{a} times {b} is {a * b}: {a}, {b} times over. " * 3, f"{a * b + 1}."


def pair_row(tokenizer: Any, index: int, pair: tuple, length: int) -> dict[str, Any] | None:
    """One ``pairs/`` row as the data stage writes it; None when a side trains no token."""
    prompt, *replies = pair
    options: dict[str, Any] = {"max_length": length, "train_on": "last_assistant"}
    chosen, rejected = (
        render_chat(tokenizer, [*prompt, {"role": "assistant", "content": r}], **options)
        for r in replies
    )
    if not (chosen.trained_tokens and rejected.trained_tokens):
        return None
    return {
        "id": f"dpo-{index}",
        "chosen_input_ids": chosen.input_ids,
        "chosen_labels": chosen.labels,
        "rejected_input_ids": rejected.input_ids,
        "rejected_labels": rejected.labels,
        "margin": 0.0,
    }


def write_pairs(model_dir: Path, data_dir: Path, train_n: int, val_n: int, length: int) -> dict:
    """``pairs/train.parquet`` and ``pairs/val.parquet`` from the first pairs that fit."""
    tokenizer = load_tokenizer(str(model_dir))
    rows = (pair_row(tokenizer, i, pair, length) for i, pair in enumerate(demo_pairs()))
    kept = list(itertools.islice((row for row in rows if row), train_n + val_n))
    (data_dir / "pairs").mkdir(parents=True, exist_ok=True)
    for split, part in (("train", kept[:train_n]), ("val", kept[train_n:])):
        table = pa.Table.from_pylist(part, schema=PAIR_SCHEMA)
        pq.write_table(table, data_dir / "pairs" / f"{split}.parquet")
    tokens = sum(len(r["chosen_input_ids"]) + len(r["rejected_input_ids"]) for r in kept)
    source = DATA.name if DATA.is_file() else "synthetic"
    return {"source": source, "pairs": len(kept), "mean tokens/row": tokens / 2 / len(kept)}


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views and shared weights count once)."""
    sizes: dict[int, int] = {}
    for tensor in tensors:
        if not tensor.is_meta:
            storage = tensor.untyped_storage()
            sizes[storage.data_ptr()] = max(sizes.get(storage.data_ptr(), 0), storage.nbytes())
    return sum(sizes.values())


def _quant_tensors(state: Any) -> list[torch.Tensor]:
    """bitsandbytes' scales and code book of a 4-bit weight (nested for double quantization)."""
    values = list(vars(state).values())
    nested = [t for v in values if type(v) is type(state) for t in _quant_tensors(v)]
    return [v for v in values if isinstance(v, torch.Tensor)] + nested


def module_tensors(module: torch.nn.Module) -> Iterator[torch.Tensor]:
    """A module's own parameters and buffers, with the quantization state of 4-bit weights."""
    for tensor in itertools.chain(module.parameters(False), module.buffers(False)):
        yield tensor
        if getattr(tensor, "quant_state", None) is not None:
            yield from _quant_tensors(tensor.quant_state)


def census(model_class: type) -> dict[str, Any]:
    """Live instances of ``model_class``, module weight bytes and all tensor bytes, now."""
    gc.collect()
    objects = gc.get_objects()
    modules = [o for o in objects if issubclass(type(o), torch.nn.Module)]
    tensors = [o for o in objects if issubclass(type(o), torch.Tensor)]
    return {
        "model copies": sum(issubclass(type(m), model_class) for m in modules),
        "weight MB": storage_bytes(t for m in modules for t in module_tensors(m)) / MB,
        "live tensor MB": storage_bytes(tensors) / MB,
        "peak at last step MB": peak_mb(),
    }


def load_reference(model_dir: Path) -> Any:
    """A frozen second copy as TRL loads it; one forward faults every weight in."""
    reference = load_model(str(model_dir)).eval().requires_grad_(False)
    with torch.no_grad():
        reference(input_ids=torch.zeros((1, 8), dtype=torch.long))
    return reference


def train_dpo(
    work: Path, kind: str, steps: int, batch: int, reference_copy: bool, threshold: int
) -> dict[str, Any]:
    """DPO through the recipe, optionally beside a reference copy, under a fixed mmap threshold."""
    quiet_libraries()
    model_dir, data_dir = work / "model", work / "data"
    if threshold:  # a fixed threshold also stops glibc from raising it
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, threshold * MB)
    started = time.perf_counter()
    architecture = json.loads((model_dir / "config.json").read_text())["architectures"][0]
    model_class = getattr(transformers, architecture)
    reference = load_reference(model_dir) if reference_copy else None
    alive: dict[str, Any] = {}

    def log(**record: Any) -> None:
        if record.get("step") == steps and "loss" in record:
            alive.update(census(model_class))

    config = Config(
        name="bench",
        model=ModelConfig(name_or_path=str(model_dir)),
        data=DataConfig(path=str(data_dir)),
        method=MethodConfig(kind=kind),
        objective="dpo",
        train=TrainConfig(max_steps=steps, batch_size=batch),
    )
    with tempfile.TemporaryDirectory(prefix="tuneforge-dpo-") as tmp:
        summary = train(
            config, str(model_dir), data_dir, Path(tmp) / "out",
            checkpoints=Path(tmp) / "checkpoints", key="bench", log=log,
        )  # fmt: skip
    del reference  # alive until here: the baseline holds it through training
    return alive | {
        "trainable": summary["trainable_parameters"],
        "loop s": summary["seconds"],
        "total s": time.perf_counter() - started,
    }


def table_row(name: str, result: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """One row: the child's census and memory, and its memory over the baseline's."""
    keys = ("trainable", "model copies", "weight MB", "live tensor MB")
    row = {"method": name} | {key: result[key] for key in keys}
    return row | {
        "peak RSS MB": result["peak_rss"],
        "+RSS MB": result["added_rss"],
        "peak anon MB": result["peak_anon"],
        "loop s": result["loop s"],
        "total s": result["total s"],
        "RSS x base": result["peak_rss"] / baseline["peak_rss"],
        "+RSS x base": result["added_rss"] / baseline["added_rss"],
    }


def measure(work: Path, args: argparse.Namespace, threshold: int) -> dict[str, dict[str, Any]]:
    """Every method and the baseline, each in its own child, under one allocator setting."""
    results: dict[str, dict[str, Any]] = {}
    for name, kind, reference in (*RUNS, (BASELINE, "full", True)):
        results[name] = run(train_dpo, work, kind, args.steps, args.batch, reference, threshold)
        print(f"[{time.strftime('%H:%M:%S')}] {name}, mmap threshold {threshold or 'glibc'}: "
              f"{json.dumps(results[name])}", flush=True)  # fmt: skip
    return results


def report(work: Path, args: argparse.Namespace) -> None:
    """Build the model and pairs, run every method and the baseline, print the tables."""
    model = run(build_model, work / "model", LARGE, args.seed)
    pairs = (work / "model", work / "data", args.steps * args.batch, args.val, args.length)
    data = run(write_pairs, *pairs)
    print(
        f"model: {model['parameters'] / 1e6:.1f}M parameters "
        f"({model['parameters'] * 4 / MB:,.0f} MB in fp32); data: {data['pairs']} pairs from "
        f"{data['source']}, {data['mean tokens/row']:.0f} tokens a row; {args.steps} steps of "
        f"{args.batch} pairs",
        flush=True,
    )
    everything: dict[str, Any] = {"model": model, "data": data}
    for threshold in dict.fromkeys((0, args.mmap_threshold)):
        results = everything[f"mmap threshold {threshold}"] = measure(work, args, threshold)
        allocator = f"mmap threshold {threshold} MB" if threshold else "glibc default allocator"
        print(f"\n## DPO, {model['parameters'] / 1e6:.0f}M parameters, fp32, {allocator}\n")
        print_table([table_row(name, r, results[BASELINE]) for name, r in results.items()])
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps a run")
    parser.add_argument("--mmap-threshold", type=int, default=1, help="MB; 0: glibc's only")
    parser.add_argument("--batch", type=int, default=4, help="pairs a step")
    parser.add_argument("--val", type=int, default=4, help="validation pairs")
    parser.add_argument("--length", type=int, default=256, help="max_length of a row")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work", type=Path, help="keep the model and the pairs here")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tuneforge-bench-") as tmp:
        report(args.work or Path(tmp), args)


if __name__ == "__main__":
    main()
