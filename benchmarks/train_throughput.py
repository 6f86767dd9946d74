"""Training throughput and memory: tuneforge's SFT against a plain TRL SFTTrainer, and per method.

Usage: ``python -m benchmarks.train_throughput [--quick] [--steps N] [--repeats N] [--work DIR]``
(default arguments: about 6 minutes on 2 quiet CPU cores; ``--quick``: 2 minutes).

Model: the project's own Llama (:func:`tuneforge.models.tiny.build_tiny_model`: byte-level BPE
tokenizer with a ChatML template, then ``--pretrain-steps`` of pre-training, default 0: random
init), 20.3M parameters (hidden 512, 6 layers, MLP 1,408, vocabulary 2,048). Data: the alpaca
demo through the project's data stage (:func:`tuneforge.data.prepare.prepare_data`,
``max_length`` L, 5% validation), which writes the token rows and the packed rows.

Budget: ``B x L`` token slots per micro-batch (``--batch`` B, default 4; ``--length`` L, 256),
one micro-batch per optimizer step, the same learning rate (``--lr``) and seed on both sides.

* **tuneforge SFT**: :func:`tuneforge.train.recipes.train` with a :class:`Config` built in code,
  objective sft and every default (LoRA r 16, alpha 32, dropout 0.05, all linear layers; cosine
  schedule, 5% warm-up; precision auto: fp32 on this CPU) except ``train.packing: true`` (the
  data stage's padding-free rows of L tokens, block-diagonal masks): B packed rows a step.
  **tuneforge, packing off** is the same with ``train.packing: false``, the schema default.
* **TRL default**: ``trl.SFTTrainer`` on the same model with ``SFTConfig`` defaults (padding, no
  packing, gradient checkpointing, linear schedule without warm-up, fused AdamW) except
  ``per_device_train_batch_size=B``, ``max_length=L``, ``learning_rate``, ``max_steps``,
  ``bf16=False``, ``report_to=[]``, ``save_strategy="no"`` and ``disable_tqdm``. The LoRA config
  is tuneforge's own (:func:`tuneforge.train.adapters.peft_config`). The dataset is the data
  stage's kept training samples as conversational prompt/completion pairs, so TRL renders the
  same chat template and, by default for that format, trains on the completion only; its token
  ids are tuneforge's (checked and printed), and it also trains the newline after each reply's
  end-of-turn token. **TRL fp32, no checkpointing** adds ``gradient_checkpointing=False``.
  **TRL default, bf16 autocast** keeps SFTConfig's ``bf16`` default (which on a CPU refuses to
  start without ``use_cpu=True``, so that is set): bf16 autocast on a CPU without native bf16.

Trained tokens are tokens whose label is not -100 after the causal shift, counted on the batches
each trainer really drew (TRL: a wrapper around its collator; its loader draws one batch ahead,
which is left out). The wall-clock time is noted at the end of every optimizer step: ``step s``
is the median step, ``tok/s`` trained tokens per step over it, ``tok/s (loop)`` trained tokens
over the whole loop (tuneforge: ``train``'s ``seconds``, with its final checkpoint; TRL:
``trainer.train()``), ``cores`` the process's CPU time over wall time during the steps (2 on a
quiet machine) and ``fill`` real tokens per computed slot. On a machine shared with other jobs a
step's wall time (and its CPU time, inflated by spinning threads) swings several-fold from one
run to the next, and only ever upwards: the pairs run in turns (``--repeats``) and the target is
judged on the best run of each side, as ``timeit`` does; every pair's ratio is printed too.

Equal loss: both train ``--steps`` optimizer steps (``--match tokens``: tuneforge stops at TRL's
trained-token count instead, in fewer, fuller steps). Both final models are scored by one
function on the validation token rows (mean loss per trained token); the target needs
tuneforge's loss at most 2% above TRL's. Seeds are fixed, so repeats train identical weights
and only the first TRL run is scored. ``--work DIR`` keeps the models, the data and every
finished run, so that an interrupted run continues where it stopped.

Each run is a forked child (:func:`benchmarks.forked.in_child`) started after the libraries are
imported: ``peak RSS`` is its ``ru_maxrss``, ``+RSS`` what it added to the resident set it
inherited, ``peak anon`` the largest anonymous RSS sampled every 20 ms (``/proc/self/status``),
which leaves out the file pages of memory-mapped safetensors weights.

**Methods**: LoRA, QLoRA (bitsandbytes NF4 base, double quantization, fp32 compute on CPU) and
full fine-tuning through ``train`` on the same model and budget (``--method-steps``, no
validation split), with the bytes of the model's parameters and buffers (``weights MB``).
**Memory at >= 100M parameters**: LoRA on the fp32 base against QLoRA on a random-init Llama of
105M parameters (hidden 1,024, 8 layers, MLP 2,816), ``--large-steps`` steps of
``--large-batch`` rows of L tokens; the target is judged on ``+RSS``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import trl  # noqa: F401  (imported before forking, so +RSS leaves the libraries out)

from benchmarks.dedup import print_table
from benchmarks.forked import in_child
from tuneforge.config.schema import (
    Config,
    DataConfig,
    MethodConfig,
    ModelConfig,
    TinyModelConfig,
    TrainConfig,
)
from tuneforge.console import quiet_libraries
from tuneforge.data.prepare import prepare_data, read_split, read_tokens
from tuneforge.models.load import load_tokenizer
from tuneforge.models.tiny import build_tiny_model
from tuneforge.train.adapters import peft_config
from tuneforge.train.batching import collate
from tuneforge.train.loss import IGNORE_INDEX, token_loss_sum, trained_tokens
from tuneforge.train.methods import prepare_model
from tuneforge.train.recipes import train
from tuneforge.train.rows import load_rows

THROUGHPUT_TARGET = 2.0  # tuneforge trained tokens/s over TRL default's
LOSS_TOLERANCE = 0.02  # final validation losses this close count as equal
MEMORY_TARGET = 0.5  # QLoRA peak memory over LoRA-on-fp32's, >= 100M parameters
DATA = "/work/shared/fixtures/public/alpaca_en_demo.json"
SMALL = TinyModelConfig(hidden_size=512, num_layers=6, num_heads=8, intermediate_size=1408)
LARGE = TinyModelConfig(
    hidden_size=1024, num_layers=8, num_heads=16, intermediate_size=2816, pretrain_steps=0
)
Stamp = tuple[float, float]  # wall-clock and CPU seconds


@dataclass(frozen=True)
class Budget:
    """What every run shares."""

    batch: int = 4
    length: int = 256
    lr: float = 1e-3
    seed: int = 42


class AnonPeak:
    """Samples this process's anonymous RSS every 20 ms; ``peak_mb`` is the largest seen."""

    def __init__(self) -> None:
        self.peak_mb, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> AnonPeak:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with open("/proc/self/status") as fh:
                line = next(row for row in fh if row.startswith("RssAnon:"))
            self.peak_mb = max(self.peak_mb, int(line.split()[1]) / 1024)
            if self._stop.wait(0.02):
                return


def guarded(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``fn(*args)`` with its anonymous peak; an error becomes a result, so no child hangs."""
    try:
        with AnonPeak() as anon:
            result = fn(*args)
        return result | {"peak_anon": anon.peak_mb}
    except Exception:  # the parent prints it; in_child would wait forever on a dead child
        return {"error": traceback.format_exc()}


def run(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``fn`` in a forked child: its result with peak RSS and added RSS."""
    result, peak, added = in_child(guarded, fn, *args)
    if "error" in result:
        raise RuntimeError(f"{fn.__name__} failed in its child:\n{result['error']}")
    return result | {"peak_rss": peak, "added_rss": added}


# --- setup -------------------------------------------------------------------------------


def build_model(out: Path, spec: TinyModelConfig, seed: int) -> dict[str, Any]:
    """The project's tiny Llama at ``out`` (reused when it was built with the same spec)."""
    marker = out / "tiny_model.json"
    if marker.is_file() and json.loads(marker.read_text())["spec"] == spec.model_dump():
        return json.loads(marker.read_text())
    quiet_libraries()
    build_tiny_model(out, spec, seed)
    return json.loads(marker.read_text())


def prepare(model_dir: Path, out: Path, length: int, val_fraction: float, seed: int) -> dict:
    """The data stage over the alpaca demo, written to ``out``; returns its books."""
    data = DataConfig(
        path=DATA, max_length=length, val_fraction=val_fraction, test_fraction=val_fraction
    )
    out.mkdir(parents=True, exist_ok=True)
    books = prepare_data(data, load_tokenizer(str(model_dir)), seed, out)
    return {key: books[key] for key in ("read", "kept", "splits", "trained_tokens", "packing")}


def trl_record(record: dict[str, Any]) -> dict[str, Any]:
    """A kept chat sample as TRL's conversational prompt/completion pair (last reply trained)."""
    messages = record["messages"]
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def mean_row_trained(data_dir: Path) -> float:
    """Mean trained tokens (after the shift) per packed training row."""
    rows = load_rows(data_dir, "train", packed=True)
    return sum(_trained(labels) for labels in rows.labels) / len(rows)


def _trained(labels: list[int]) -> int:
    return sum(label != IGNORE_INDEX for label in labels[1:])


@torch.no_grad()
def validation_loss(model: Any, data_dir: Path, pad_id: int, batch: int) -> float:
    """Mean next-token loss per trained token of the validation rows (one scorer for all runs)."""
    rows = load_rows(data_dir, "val")
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(rows), batch):
        part = rows.take(list(range(start, min(start + batch, len(rows)))))
        inputs = collate(part.input_ids, part.labels, pad_id)
        labels = inputs.pop("labels")
        loss, tokens = token_loss_sum(model(**inputs).logits, labels)
        total, count = total + float(loss), count + tokens
    return total / count


def _step_figures(stamps: list[Stamp], tokens: int, steps: int, seconds: float) -> dict:
    """Rates from the (wall, CPU) time at the end of each optimizer step."""
    wall = [b[0] - a[0] for a, b in itertools.pairwise(stamps)]
    cpu = [b[1] - a[1] for a, b in itertools.pairwise(stamps)]
    step_s = statistics.median(wall) if wall else seconds / steps
    return {
        "steps": steps,
        "trained tokens": tokens,
        "tok/s": tokens / steps / step_s,
        "tok/s (loop)": tokens / seconds,
        "step s": step_s,
        "cores": sum(cpu) / sum(wall) if wall else float("nan"),
    }


def stamp() -> Stamp:
    """Wall-clock and process CPU time (all threads) now."""
    return time.perf_counter(), time.process_time()


# --- the runs (each in a forked child) ---------------------------------------------------


def tuneforge_config(
    model_dir: Path, budget: Budget, steps: int, kind: str, packing: bool = True
) -> Config:
    """tuneforge's defaults for objective sft, but the budget, lr, steps, method and packing."""
    return Config(
        name="bench",
        seed=budget.seed,
        model=ModelConfig(name_or_path=str(model_dir)),
        data=DataConfig(path=DATA, max_length=budget.length),
        method=MethodConfig(kind=kind),
        train=TrainConfig(max_steps=steps, batch_size=budget.batch, packing=packing, lr=budget.lr),
    )


def run_tuneforge(
    model_dir: Path, data_dir: Path, budget: Budget, steps: int, kind: str, packing: bool = True
) -> dict[str, Any]:
    """``train`` for ``steps`` steps of ``kind``; step times from its per-step log."""
    quiet_libraries()
    config = tuneforge_config(model_dir, budget, steps, kind, packing)
    stamps: list[Stamp] = []
    with tempfile.TemporaryDirectory(prefix="tuneforge-train-") as tmp:
        summary = train(
            config,
            str(model_dir),
            data_dir,
            Path(tmp) / "train",
            checkpoints=Path(tmp) / "checkpoints",
            key="bench",
            log=lambda **record: stamps.append(stamp()) if "loss" in record else None,
        )
    figures = _step_figures(stamps, summary["trained_tokens"], summary["steps"], summary["seconds"])
    return figures | {
        "val loss": summary["val_loss_after"],
        "val before": summary["val_loss_before"],
        "precision": summary["precision"],
        "trainable": summary["trainable_parameters"],
    }


def weights_mb(model_dir: Path, kind: str) -> dict[str, Any]:
    """Bytes of the parameters and buffers of the model ``train`` would train, in MB."""
    quiet_libraries()
    config = tuneforge_config(model_dir, Budget(), 1, kind)
    model = prepare_model(str(model_dir), config, torch.float32, torch.device("cpu"))
    tensors = itertools.chain(model.parameters(), model.buffers())
    return {"weights MB": sum(t.numel() * t.element_size() for t in tensors) / 2**20}


class CountingCollator:
    """Wraps TRL's collator; while ``active``, notes each batch's trained tokens, tokens, slots.

    The data loader draws one batch ahead, so only the first batches, one per step, trained.
    """

    def __init__(self, inner: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> None:
        self.inner, self.active = inner, False
        self.batches: list[tuple[int, int, int]] = []

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.inner(examples)
        if self.active:
            mask, ids = batch["attention_mask"], batch["input_ids"]
            self.batches.append((trained_tokens(batch["labels"]), int(mask.sum()), ids.numel()))
        return batch

    def totals(self, steps: int) -> tuple[int, float]:
        """Trained tokens of the first ``steps`` batches, and their real tokens per slot."""
        used = self.batches[:steps]
        return sum(b[0] for b in used), sum(b[1] for b in used) / sum(b[2] for b in used)


def run_trl(
    model_dir: Path, data_dir: Path, budget: Budget, steps: int, options: dict[str, Any]
) -> dict[str, Any]:
    """A plain ``SFTTrainer`` with SFTConfig defaults but budget, lr, steps and ``options``.

    ``options`` are SFTConfig fields, and ``score: False`` skips the validation loss.
    """
    quiet_libraries()
    options = dict(options)
    score = options.pop("score", True)
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    tokenizer = load_tokenizer(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    records = read_split(data_dir, "train")
    stamps: list[Stamp] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, *_: Any, **__: Any) -> None:
            counter.active = True

        def on_step_end(self, *_: Any, **__: Any) -> None:
            stamps.append(stamp())

        def on_train_end(self, *_: Any, **__: Any) -> None:
            counter.active = False

    with tempfile.TemporaryDirectory(prefix="trl-train-") as tmp:
        args = SFTConfig(
            output_dir=tmp,
            per_device_train_batch_size=budget.batch,
            max_length=budget.length,
            learning_rate=budget.lr,
            max_steps=steps,
            seed=budget.seed,
            report_to=[],
            save_strategy="no",
            disable_tqdm=True,
            **options,
        )
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list([trl_record(r) for r in records]),
            processing_class=tokenizer,
            peft_config=peft_config(MethodConfig()),
            callbacks=[Clock()],
        )
        counter = CountingCollator(trainer.data_collator)
        trainer.data_collator = counter
        check = same_rows(trainer.train_dataset, data_dir)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    tokens, fill = counter.totals(len(stamps))
    figures = _step_figures(stamps, tokens, len(stamps), seconds)
    pad_id = tokenizer.pad_token_id
    val = validation_loss(trainer.model, data_dir, pad_id, budget.batch) if score else ""
    return figures | check | {"val loss": val, "fill": fill}


def same_rows(dataset: Any, data_dir: Path) -> dict[str, Any]:
    """Does TRL's prepared dataset hold tuneforge's token rows? And how many more trained tokens?"""
    ids, labels = read_tokens(data_dir, "train")
    theirs = dataset["input_ids"]
    same = sum(a == b for a, b in zip(theirs, ids, strict=False))
    extra = sum(_trained(row) for row in dataset["labels"]) - sum(_trained(row) for row in labels)
    return {"same ids": f"{same}/{len(ids)}", "extra trained/sample": extra / len(ids)}


# --- tables ------------------------------------------------------------------------------

COLUMNS = ("steps", "trained tokens", "tok/s", "tok/s (loop)", "step s", "cores")


def table_row(name: str, result: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """One row of the headline table; ``x TRL`` compares tok/s with ``baseline``'s."""
    row = {"what": name} | {key: result[key] for key in COLUMNS}
    return row | {
        "fill": result.get("fill", ""),
        "val loss": result["val loss"] if result["val loss"] is not None else "",
        **_memory(result),
        "x TRL": result["tok/s"] / baseline["tok/s"],
    }


def method_row(name: str, result: dict[str, Any], weights: float) -> dict[str, Any]:
    """One row of the method tables."""
    row = {"method": name, "trainable": result["trainable"]}
    row |= {key: result[key] for key in COLUMNS}
    return row | {"weights MB": weights} | _memory(result)


def _memory(result: dict[str, Any]) -> dict[str, float]:
    return {
        "peak RSS MB": result["peak_rss"],
        "+RSS MB": result["added_rss"],
        "peak anon MB": result["peak_anon"],
    }


def _verdict(target: str, wanted: str, got: str, ok: bool) -> dict[str, Any]:
    return {"target": target, "wanted": wanted, "measured": got, "result": "PASS" if ok else "FAIL"}


def throughput_verdict(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    """Best tuneforge run over best TRL run (other jobs only slow runs down), at equal loss."""
    best = max(tf["tok/s"] for tf, _ in pairs) / max(base["tok/s"] for _, base in pairs)
    per_pair = ", ".join(f"{tf['tok/s'] / base['tok/s']:.2f}" for tf, base in pairs)
    gap = pairs[0][0]["val loss"] / pairs[0][1]["val loss"] - 1
    got = f"{best:.2f}x best of {len(pairs)} (pairs: {per_pair}); val loss {gap:+.1%} vs TRL"
    wanted = f">= {THROUGHPUT_TARGET}x trained tok/s, val loss at most {LOSS_TOLERANCE:.0%} higher"
    ok = best >= THROUGHPUT_TARGET and gap <= LOSS_TOLERANCE
    return _verdict("tuneforge SFT vs TRL default (fp32)", wanted, got, ok)


def memory_verdict(rows: dict[str, dict[str, Any]], params: int) -> dict[str, Any]:
    """QLoRA over LoRA-on-fp32 memory, judged on +RSS (what each run added to the libraries)."""
    lora, qlora = rows["lora"], rows["qlora"]
    ratio = {key: qlora[key] / lora[key] for key in ("+RSS MB", "peak anon MB", "peak RSS MB")}
    got = (
        f"+RSS {ratio['+RSS MB']:.2f}x, peak anon {ratio['peak anon MB']:.2f}x, peak RSS "
        f"{ratio['peak RSS MB']:.2f}x; weights {qlora['weights MB'] / lora['weights MB']:.2f}x "
        f"({params / 1e6:.0f}M parameters)"
    )
    ok = ratio["+RSS MB"] <= MEMORY_TARGET
    return _verdict("QLoRA vs LoRA-fp32 peak memory", f"<= {MEMORY_TARGET}x +RSS", got, ok)


# --- the benchmark -----------------------------------------------------------------------


def headline(runs: Runs, work: Path, budget: Budget, args: argparse.Namespace, fill: float) -> dict:
    """tuneforge vs TRL default, repeated in turns; then the variants."""
    model, data = work / "model", work / "data"
    per_step = mean_row_trained(data) * budget.batch
    pairs, steps = [], args.steps
    for n in range(1, args.repeats + 1):
        # seeds are fixed, so a repeat trains the same weights: TRL's is scored once
        fp32 = {"bf16": False, "score": n == 1}
        base = runs(f"TRL default, fp32 (run {n})", run_trl, model, data, budget, args.steps, fp32)
        if args.match == "tokens" and n == 1:
            steps = max(1, round(base["trained tokens"] / per_step))
        tuned = runs(f"tuneforge SFT (run {n})", run_tuneforge, model, data, budget, steps, "lora")
        base["val loss"] = base["val loss"] if n == 1 else pairs[0][1]["val loss"]
        pairs.append((tuned | {"fill": fill}, base))
    rows = [
        table_row(name, result, base)
        for tuned, base in pairs
        for name, result in ((base["name"], base), (tuned["name"], tuned))
    ]
    nockpt = {"bf16": False, "gradient_checkpointing": False}
    bf16 = {"use_cpu": True, "score": False}  # SFTConfig's bf16 default; a CPU needs use_cpu
    for name, n_steps, fn, rest in (
        ("TRL fp32, no checkpointing", args.extra_steps, run_trl, (nockpt,)),
        ("tuneforge, packing off", args.extra_steps, run_tuneforge, ("lora", False)),
        ("TRL default, bf16 autocast", args.bf16_steps, run_trl, (bf16,)),
    ):
        if n_steps:
            result = runs(name, fn, model, data, budget, n_steps, *rest)
            rows.append(table_row(name, result, pairs[0][1]))
    return {"pairs": pairs, "rows": rows, "tuneforge_steps": steps}


def methods(runs: Runs, model: Path, data: Path, budget: Budget, steps: int, kinds: tuple) -> dict:
    """``kinds`` through ``train`` on one model and budget, and their weights' size."""
    rows: dict[str, dict[str, Any]] = {}
    for kind in kinds if steps else ():
        result = runs(f"{model.name} {kind}", run_tuneforge, model, data, budget, steps, kind)
        weights = run(weights_mb, model, kind)["weights MB"]
        rows[kind] = method_row(kind, result, weights)
    return rows


class Runs:
    """Runs each measurement in a forked child, with a progress line.

    With a ``path`` (``--work``), finished runs are kept there, so that a rerun after an
    interruption picks up where it stopped (the same name and arguments: the same run).
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.done = json.loads(path.read_text()) if path and path.is_file() else {}

    def __call__(self, name: str, fn: Callable[..., dict[str, Any]], *args: Any) -> dict:
        key = f"{name}: {fn.__name__}{args!r}"
        result = self.done.get(key) or run(fn, *args) | {"name": name}
        self.done[key] = result
        if self.path:
            self.path.write_text(json.dumps(self.done, indent=1, default=str))
        print(
            f"[{time.strftime('%H:%M:%S')}] {name}: {result['steps']} steps, "
            f"{result['tok/s']:,.1f} trained tok/s, step {result['step s']:.2f}s on "
            f"{result['cores']:.2f} cores, val loss {result.get('val loss')}, "
            f"peak RSS {result['peak_rss']:,.0f} MB",
            flush=True,
        )
        return result


def setup(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Both models, and the data stage twice (5% validation; none for the method tables)."""
    spec = SMALL.model_copy(update={"pretrain_steps": args.pretrain_steps})
    small = run(build_model, work / "model", spec, args.seed)
    big = run(build_model, work / "model-large", LARGE, args.seed) if args.large_steps else None
    if (
        big
        and (work / "model-large" / "tokenizer.json").read_bytes()
        != (work / "model" / "tokenizer.json").read_bytes()
    ):
        raise RuntimeError("the two models' tokenizers differ; the prepared data fits only one")
    books = run(prepare, work / "model", work / "data", args.length, 0.05, args.seed)
    run(prepare, work / "model", work / "data-methods", args.length, 0.0, args.seed)
    return {"model": small, "large": big, "books": books}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4, help="B: rows per micro-batch")
    parser.add_argument("--length", type=int, default=256, help="L: tokens per row")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--steps", type=int, default=6, help="TRL steps of the headline pairs")
    parser.add_argument(
        "--match",
        choices=("steps", "tokens"),
        default="steps",
        help="tuneforge trains as many steps as TRL, or as many trained tokens",
    )
    parser.add_argument("--repeats", type=int, default=3, help="headline tuneforge/TRL pairs")
    parser.add_argument("--extra-steps", type=int, default=3, help="no-checkpointing, no-packing")
    parser.add_argument("--bf16-steps", type=int, default=2, help="TRL with bf16 autocast")
    parser.add_argument("--method-steps", type=int, default=5, help="LoRA/QLoRA/full rows")
    parser.add_argument("--large-steps", type=int, default=2, help="the ~105M-parameter rows")
    parser.add_argument("--large-batch", type=int, default=1, help="rows per step, ~105M model")
    parser.add_argument("--pretrain-steps", type=int, default=0, help="tiny-model pre-training")
    parser.add_argument("--work", type=Path, help="keep models, data and finished runs here")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few steps, one pair")
    args = parser.parse_args()
    quick = {"steps": 3, "repeats": 1, "extra_steps": 0, "bf16_steps": 0, "method_steps": 2}
    for key, value in (quick | {"large_steps": 2}).items() if args.quick else ():
        if getattr(args, key) == parser.get_default(key):  # what the user set stays
            setattr(args, key, value)
    with tempfile.TemporaryDirectory(prefix="tuneforge-bench-") as tmp:
        report(args.work or Path(tmp), args)


def report(work: Path, args: argparse.Namespace) -> None:
    """Run every part, then print the tables and the verdicts."""
    started, budget = time.perf_counter(), Budget(args.batch, args.length, args.lr, args.seed)
    ready = setup(work, args)
    books = ready["books"]
    print(
        f"model: {ready['model']['parameters'] / 1e6:.1f}M parameters, pre-trained "
        f"{ready['model']['pretrain_steps']} steps; data: {json.dumps(books)}\n"
        f"budget: B x L = {budget.batch} x {budget.length} token slots per micro-batch, "
        f"lr {budget.lr}, seed {budget.seed}",
        flush=True,
    )
    runs = Runs(work / "runs.json" if args.work else None)
    head = headline(runs, work, budget, args, books["packing"]["train"]["efficiency"])
    kinds, data = ("lora", "qlora", "full"), work / "data-methods"
    small = methods(runs, work / "model", data, budget, args.method_steps, kinds)
    big_budget = replace(budget, batch=args.large_batch)
    big = methods(runs, work / "model-large", data, big_budget, args.large_steps, kinds[:2])
    print("\n## tuneforge SFT vs TRL SFTTrainer (same model, data, B x L, lr)\n")
    print_table(head["rows"])
    first, tuned = head["pairs"][0][1], head["pairs"][0][0]
    print(
        f"\nTRL tokenized {first['same ids']} training samples to tuneforge's token ids and "
        f"trained {first['extra trained/sample']:.2f} more tokens per sample. Validation loss "
        f"before training {tuned['val before']}; tuneforge ran {head['tuneforge_steps']} steps "
        f"for TRL's {args.steps} (--match {args.match}). Precision: {tuned['precision']}."
    )
    if small:
        print(
            f"\n## Methods, {ready['model']['parameters'] / 1e6:.0f}M parameters "
            f"({args.method_steps} steps of {budget.batch} x {budget.length})\n"
        )
        print_table(list(small.values()))
    verdicts = [throughput_verdict(head["pairs"])]
    if big:
        params = ready["large"]["parameters"]
        print(
            f"\n## Memory, {params / 1e6:.0f}M parameters "
            f"({args.large_steps} steps of {args.large_batch} x {budget.length})\n"
        )
        print_table(list(big.values()))
        verdicts.append(memory_verdict(big, params))
    print("\n## Targets\n")
    print_table(verdicts)
    print(f"\ntotal {time.perf_counter() - started:.0f}s")
    if args.json:
        everything = {"setup": ready, "headline": head, "methods": small, "large": big}
        args.json.write_text(json.dumps(everything, indent=1, default=str))


if __name__ == "__main__":
    main()
