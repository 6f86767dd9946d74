"""Stage commands: `run` (all stages), `data prepare`, `train`, `eval`, `export`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from tuneforge.cli.common import (
    ConfigArg,
    ForceOpt,
    NewRunOpt,
    SetOpt,
    open_pipeline,
    print_metrics,
)
from tuneforge.console import out
from tuneforge.pipeline import STAGES, Pipeline


def run(
    configs: Annotated[
        list[Path],
        typer.Argument(
            help="Config files, run in order; a later one can build on an earlier run "
            "(model.name_or_path: run:NAME, rl.reward_model: run:NAME)."
        ),
    ],
    set_: SetOpt = None,
    force: ForceOpt = False,
) -> None:
    """Run every stage: data -> train -> eval -> export, skipping unchanged ones."""
    for config in configs:
        # each config is loaded when its turn comes, so run:NAME finds the run just made
        with open_pipeline(config, set_, force, new_run=True, synthesize=True) as pipeline:
            run_stages(pipeline)
        export = pipeline.done["export"].path.resolve()
        out.print(f"run: {pipeline.run.path}\nexported: {export}")


def run_stages(pipeline: Pipeline, stages: Sequence[str] = STAGES) -> None:
    """Run ``stages`` in order (``base`` only for the tiny model), printing the eval's tables.

    Stops with exit 3 before the export when a gate failed, unless the pipeline
    overrides gates (the export then records the failed gates in its card).
    """
    for stage in stages:
        if stage == "base" and pipeline.config.model.name_or_path != "tiny":
            continue
        if stage == "export" and not pipeline.override_gates:
            pipeline.check_gates()
        pipeline.execute(stage)
        if stage == "eval":
            print_metrics(pipeline.done["eval"].summary)


def train(
    config: ConfigArg,
    set_: SetOpt = None,
    force: ForceOpt = False,
    new_run: NewRunOpt = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the newest complete checkpoint.")
    ] = False,
    nproc: Annotated[
        int, typer.Option("--nproc", min=1, help="Data-parallel processes (torchrun).")
    ] = 1,
    launcher_config: Annotated[
        str | None,
        typer.Option(
            "--launcher-config",
            help="accelerate config (e.g. deploy/accelerate/fsdp.yaml) for accelerate launch.",
        ),
    ] = None,
) -> None:
    """Fine-tune on the prepared data."""
    with open_pipeline(config, set_, force or resume, new_run, synthesize=True) as pipeline:
        pipeline.resume, pipeline.nproc, pipeline.launcher_config = resume, nproc, launcher_config
        result = pipeline.execute("train")
    s = result.summary
    extra = "".join(
        f", val {name[4:-7]} {s[name]} -> {s[name[:-7] + '_after']}"
        for name in s
        if name.startswith("val_") and name.endswith("_before") and name != "val_loss_before"
    )
    out.print(
        f"trained {s['steps']} steps ({s['method']}, {s['objective']}): val loss "
        f"{s['val_loss_before']} -> {s['val_loss_after']}{extra}, "
        f"{s['trained_tokens_per_s']:,.0f} trained tokens/s -> {result.path}"
    )


def eval_(
    config: ConfigArg, set_: SetOpt = None, force: ForceOpt = False, new_run: NewRunOpt = False
) -> None:
    """Evaluate the tuned model (and its base) on the test split."""
    with open_pipeline(config, set_, force, new_run) as pipeline:
        result = pipeline.execute("eval")
        print_metrics(result.summary)
        out.print(f"report: {result.path.resolve() / 'report.html'}")
        pipeline.check_gates()


def export(
    config: Annotated[
        Path,
        typer.Argument(
            help="The project's YAML config, or a run directory (runs/NAME/STAMP) to export."
        ),
    ],
    formats: Annotated[
        list[str] | None,
        typer.Option(
            "--format",
            "-f",
            help="hf, adapter, gguf, onnx, ollama (repeatable or comma-separated); "
            "replaces export.formats.",
        ),
    ] = None,
    set_: SetOpt = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Re-run the export, even when the last eval failed a gate (the card says so).",
        ),
    ] = False,
    new_run: NewRunOpt = False,
) -> None:
    """Write the requested formats, each verified, with a model card, lineage and checksums."""
    overrides = list(set_ or [])
    if formats:
        chosen = [name.strip() for item in formats for name in item.split(",") if name.strip()]
        overrides.append(f"export.formats=[{','.join(chosen)}]")
    with open_pipeline(config, overrides, force, new_run) as pipeline:
        pipeline.override_gates = force
        result = pipeline.execute("export")
    out.print(f"exported: {result.path.resolve()}")
