"""`tuneforge plan`: parameters, memory and time of a training run, before it starts."""

from __future__ import annotations

import math
from typing import Annotated, Any

import typer
from rich.table import Table

from tuneforge.cli.common import ConfigArg, SetOpt
from tuneforge.config import Config, load_config
from tuneforge.console import out

GpuOpt = Annotated[
    str | None,
    typer.Option(
        "--gpu",
        help="GPU to fit: a size (24GB) or a name (H100, H200, A100-40GB, A100-80GB, L4, "
        "RTX4090); default: this machine's GPU, if any.",
    ),
]
MeasureOpt = Annotated[
    bool | None,
    typer.Option(
        "--measure/--no-measure",
        help="Also run 3 real training steps and compare (default: for tiny and local models).",
    ),
]
COMPONENTS = ("weights", "gradients", "optimizer", "activations")


def plan(
    config: ConfigArg, set_: SetOpt = None, gpu: GpuOpt = None, measure: MeasureOpt = None
) -> None:
    """Estimate parameters and training memory for every method, and whether they fit a GPU."""
    from tuneforge.console import quiet_libraries
    from tuneforge.models import plan_measure, planner

    quiet_libraries()
    cfg = load_config(config, set_)
    target = _target_gpu(gpu)
    hf_config = planner.model_config(cfg)
    dtype = planner.plan_dtype(cfg.model.precision)  # what a GPU run trains in
    layers = planner.model_shape(hf_config).layers
    kinds = [planner.method_for(kind, cfg.method, layers) for kind in planner.KINDS]
    estimates = [planner.estimate(cfg, hf_config, dtype, method) for method in kinds]
    configured = estimates[planner.KINDS.index(cfg.method.kind)]
    out.print(method_table(cfg, configured, target))
    out.print(kinds_table(estimates, target))
    if measure is None:
        measure = plan_measure.measure_by_default(cfg)
    if measure:
        measured = plan_measure.measure(cfg, hf_config)
        on_gpu = measured.where.startswith("cuda")
        local = planner.estimate(cfg, hf_config, measured.dtype, on_gpu=on_gpu)
        out.print(measured_table(local, measured))
        out.print(epoch_time(cfg, measured.step_seconds, *planner.train_rows(cfg)))


def _target_gpu(name: str | None) -> tuple[str, float] | None:
    """(label, GiB) of the GPU to fit: the named one, this machine's, or none."""
    from tuneforge.models import planner

    if name is not None:
        return name, planner.gpu_gib(name)
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return props.name, props.total_memory / planner.GIB


def method_table(cfg: Config, estimate: Any, target: tuple[str, float] | None) -> Table:
    """The configured method: parameters, memory by component, total and fit."""
    from tuneforge.models.planner import fit, plan_dtype

    length = cfg.data.pack_length or cfg.data.max_length
    dtype = str(plan_dtype(cfg.model.precision)).removeprefix("torch.")
    checkpointing = ", gradient checkpointing" if cfg.train.gradient_checkpointing else ""
    table = Table(
        title=f"Plan: {cfg.method.kind} on {cfg.model.name_or_path}",
        caption=f"micro-batch {cfg.train.batch_size} x {length} tokens, {dtype}{checkpointing}",
    )
    table.add_column("")
    table.add_column("estimate", justify="right")
    share = estimate.trainable_params / max(estimate.total_params, 1)
    table.add_row("parameters", f"{estimate.total_params:,}")
    table.add_row("trainable", f"{estimate.trainable_params:,} ({share:.2%})")
    for component in COMPONENTS:
        table.add_row(component, size(getattr(estimate, component)))
    table.add_row("[bold]total[/bold]", f"[bold]{size(estimate.total)}[/bold]")
    if target is not None:
        fits, note = fit(estimate.total, target[1])
        table.add_row(f"fits {target[0]} ({target[1]:g} GiB)", _verdict(fits, note))
    return table


def kinds_table(estimates: list[Any], target: tuple[str, float] | None) -> Table:
    """Every method kind side by side, at the same batch, length and precision."""
    from tuneforge.models.planner import fit

    table = Table(title="Every method kind, same micro-batch")
    for column in ("kind", "trainable", *COMPONENTS, "total"):
        table.add_column(column, justify="left" if column == "kind" else "right")
    if target is not None:
        table.add_column(f"fits {target[0]}")
    for estimate in estimates:
        cells = [estimate.kind, f"{estimate.trainable_params:,}"]
        cells += [size(getattr(estimate, c)) for c in COMPONENTS]
        cells.append(size(estimate.total))
        if target is not None:
            cells.append(_verdict(*fit(estimate.total, target[1])))
        table.add_row(*cells)
    return table


def measured_table(estimate: Any, measured: Any) -> Table:
    """Estimate (for this device and dtype) against three measured steps."""
    dtype = str(measured.dtype).removeprefix("torch.")
    table = Table(
        title=f"Measured: 3 training steps on {measured.where}",
        caption=f"{dtype}, {measured.step_seconds:.3f} s per step",
    )
    for column in ("", "estimate", "measured", "error"):
        table.add_column(column, justify="right" if column else "left")
    pairs = [(c, getattr(estimate, c), getattr(measured, c)) for c in COMPONENTS]
    pairs.append(("total / peak", estimate.total, measured.peak))
    for name, guess, real in pairs:
        error = f"{(guess - real) / real:+.0%}".replace("-0%", "+0%") if real else "-"
        table.add_row(name, size(guess), size(real), error)
    return table


def epoch_time(cfg: Config, step_seconds: float, rows: int | None, source: str) -> str:
    """Rough training time from the measured step (rows padded to the full length)."""
    if rows is None:
        return f"time per epoch: {source}"
    steps = math.ceil(rows / cfg.train.batch_size)
    epoch = steps * step_seconds
    total = (
        cfg.train.max_steps * cfg.train.grad_accum * step_seconds
        if cfg.train.max_steps
        else epoch * cfg.train.epochs
    )
    return (
        f"time per epoch: ~{_duration(epoch)} ({rows:,} rows from the {source}, {steps:,} "
        f"micro-batches x {step_seconds:.3f} s, on this machine); whole run ~{_duration(total)}"
    )


def size(count: float) -> str:
    """Bytes in GiB, MiB or KiB."""
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2)):
        if count >= scale:
            return f"{count / scale:,.2f} {unit}"
    return f"{count / 1024:,.1f} KiB"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _verdict(fits: bool, note: str) -> str:
    return f"[green]yes[/green] ({note})" if fits else f"[red]no[/red] ({note})"
