"""Evaluation generation: batched ``generate`` against one-at-a-time ``model.generate``.

Usage: ``python -m benchmarks.eval_generate [--work DIR] [--prompts N] [--max-new-tokens M]
[--pretrain-steps S] [--repeats R] [--threads T]`` (defaults: about 2 minutes on 2 quiet CPU
cores, plus 2-4 minutes to build the model the first time; ``--work`` keeps it).

Model: the quickstart's tiny Llama (``model.tiny`` of ``examples/quickstart.yaml``: hidden 128,
4 layers, vocabulary 2,048; ``--pretrain-steps`` overrides its 300 steps of pre-training), fp32,
built once into ``--work``. Prompts: the first ``--prompts`` conversations of
``examples/data/support_tickets.jsonl`` without their final assistant reply, rendered by the
one rendering function (``render_prompt_batch``).

* **one-at-a-time generate**, the baseline: for each prompt, ``model.generate`` on a batch of
  one (greedy, ``--max-new-tokens``, the model's EOS ids, KV cache: the defaults).
* **tuneforge generate**: :func:`tuneforge.eval.generate.generate` with ``batch_size`` 16
  (greedy, the same ``max_new_tokens``), and again at batch sizes 1, 4 and 32.

Both sides are timed from the messages (rendering included) to the completions, after one
warm-up call; each is run ``--repeats`` times and the fastest run counts, as ``timeit`` does,
because on a shared machine other jobs only ever add time. ``tokens`` are the generated tokens
up to and including each completion's stop token (from :func:`generate_ids`, whose greedy
completions are also checked to equal the baseline's, token for token). The target: tuneforge
at batch 16 reaches at least 3x the baseline's prompts per second; the exit status is 1
otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.dedup import print_table
from tuneforge.config import load_config
from tuneforge.config.schema import TinyModelConfig
from tuneforge.console import quiet_libraries
from tuneforge.data.render import prompt_messages, render_prompt_batch
from tuneforge.eval.generate import Sampling, generate, generate_ids, stop_ids
from tuneforge.models.load import load_model, load_tokenizer
from tuneforge.models.tiny import build_tiny_model

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DATA = EXAMPLES / "data" / "support_tickets.jsonl"
TARGET = 3.0
BATCH = 16
BASELINE = "one-at-a-time generate"
Message = dict[str, Any]


def build_model(out: Path, spec: TinyModelConfig) -> dict[str, Any]:
    """The tiny model at ``out``, reused when it was built with the same spec."""
    marker = out / "tiny_model.json"
    if not (marker.is_file() and json.loads(marker.read_text())["spec"] == spec.model_dump()):
        build_tiny_model(out, spec, seed=0)
    return json.loads(marker.read_text())


def load_prompts(count: int) -> list[list[Message]]:
    """The first ``count`` support tickets without their final assistant reply."""
    with open(DATA, encoding="utf-8") as handle:
        records = [json.loads(line) for line, _ in zip(handle, range(count), strict=False)]
    return [prompt_messages(record["messages"])[0] for record in records]


def one_at_a_time(model: Any, tokenizer: Any, prompts: list, new: int) -> list[list[int]]:
    """The baseline: ``model.generate`` on each prompt alone; completions cut at a stop id."""
    stop = stop_ids(model, tokenizer)
    completions = []
    for ids in render_prompt_batch(tokenizer, [(p, None) for p in prompts]):
        row = torch.tensor([ids])
        with torch.no_grad():
            output = model.generate(
                input_ids=row,
                attention_mask=torch.ones_like(row),
                max_new_tokens=new,
                do_sample=False,
                eos_token_id=stop,
                pad_token_id=tokenizer.pad_token_id,
            )
        tokens = output[0, row.shape[1] :].tolist()
        cut = next((i + 1 for i, t in enumerate(tokens) if t in stop), len(tokens))
        completions.append(tokens[:cut])
    return completions


def fastest(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The shortest wall time of ``repeats`` calls, and the last call's result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def row(name: str, batch: int, seconds: float, prompts: int, tokens: int) -> dict[str, Any]:
    """One table row."""
    return {
        "run": name,
        "batch": batch,
        "prompts": prompts,
        "tokens": tokens,
        "seconds": seconds,
        "tokens/s": tokens / seconds,
        "prompts/s": prompts / seconds,
    }


def measure(model_dir: Path, args: argparse.Namespace) -> tuple[list[dict], dict[str, Any]]:
    """Time the baseline and every batch size; check greedy completions are equal."""
    tokenizer, model = load_tokenizer(str(model_dir)), load_model(str(model_dir)).eval()
    prompts, new = load_prompts(args.prompts), args.max_new_tokens
    generate(model, tokenizer, prompts[:BATCH], max_new_tokens=new, label=None)  # warm-up
    seconds, baseline = fastest(lambda: one_at_a_time(model, tokenizer, prompts, new), args.repeats)
    tokens = sum(map(len, baseline))
    rows = [row(BASELINE, 1, seconds, len(prompts), tokens)]
    prompt_ids = render_prompt_batch(tokenizer, [(p, None) for p in prompts])
    ours = generate_ids(
        model,
        prompt_ids,
        pad_id=tokenizer.pad_token_id,
        stop_ids=stop_ids(model, tokenizer),
        sampling=Sampling(max_new_tokens=new),
        batch_size=BATCH,
    )
    checks = {
        "identical completions": sum(a == b for a, b in zip(ours, baseline, strict=True)),
        "prompts": len(prompts),
        "mean prompt tokens": sum(map(len, prompt_ids)) / len(prompt_ids),
        "completions that hit max_new_tokens": sum(len(c) == new for c in ours),
    }
    for batch in args.batch_sizes:
        seconds, _ = fastest(
            lambda b=batch: generate(
                model, tokenizer, prompts, max_new_tokens=new, batch_size=b, label=None
            ),
            args.repeats,
        )
        rows.append(row("tuneforge generate", batch, seconds, len(prompts), sum(map(len, ours))))
    return rows, checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="keep the built model here (reused)")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--pretrain-steps", type=int, help="override the quickstart's 300")
    parser.add_argument("--repeats", type=int, default=2, help="runs per side; the fastest counts")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, BATCH, 32])
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    args = parser.parse_args()
    if BATCH not in args.batch_sizes:
        args.batch_sizes.append(BATCH)
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_libraries()
    spec = load_config(EXAMPLES / "quickstart.yaml").model.tiny
    if args.pretrain_steps is not None:
        spec = spec.model_copy(update={"pretrain_steps": args.pretrain_steps})
    with tempfile.TemporaryDirectory(prefix="tuneforge-bench-") as tmp:
        model_dir = (args.work or Path(tmp)) / "model"
        built = build_model(model_dir, spec)
        load_before = os.getloadavg()
        rows, checks = measure(model_dir, args)
    report(rows, checks, built, args, load_before)


def report(
    rows: list[dict], checks: dict, built: dict, args: argparse.Namespace, load: tuple
) -> None:
    """Print the set-up, the table and the verdict; exit 1 when the target is missed."""
    print(
        f"model: {built['parameters'] / 1e6:.2f}M parameters, pre-trained "
        f"{built['pretrain_steps']} steps; {checks['prompts']} prompts "
        f"({checks['mean prompt tokens']:.0f} tokens on average), max_new_tokens "
        f"{args.max_new_tokens}, greedy, fp32; torch threads {torch.get_num_threads()}, "
        f"{os.cpu_count()} CPUs; load average {load[0]:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after; fastest of {args.repeats}\n"
    )
    print_table(rows)
    base = rows[0]
    ours = next(r for r in rows[1:] if r["batch"] == BATCH)
    ratio = ours["prompts/s"] / base["prompts/s"]
    print(
        f"\nbatched greedy == one at a time: {checks['identical completions']}/"
        f"{checks['prompts']} completions identical, token for token; "
        f"{checks['completions that hit max_new_tokens']} ran to max_new_tokens"
    )
    verdict = "met" if ratio >= TARGET else "MISSED"
    print(f"throughput at batch {BATCH}: {ratio:.1f}x {BASELINE} (target >= {TARGET}x): {verdict}")
    if ratio < TARGET:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
