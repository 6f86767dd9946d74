"""`tuneforge models tiny`."""

from __future__ import annotations

from pathlib import Path

import typer

from tuneforge.config.schema import TinyModelConfig
from tuneforge.console import out

models_app = typer.Typer(help="Build and inspect models.", no_args_is_help=True)


@models_app.command("tiny")
def tiny(
    out_dir: Path = typer.Argument(..., help="Folder to write the model into."),
    pretrain_steps: int = typer.Option(400, help="Pre-training steps (0: random weights)."),
    hidden_size: int = typer.Option(128),
    num_layers: int = typer.Option(4),
    vocab_size: int = typer.Option(2048),
    seed: int = typer.Option(0),
) -> None:
    """Build a small Llama model and BPE tokenizer with a chat template, trained offline."""
    from tuneforge.console import quiet_libraries
    from tuneforge.models.tiny import build_tiny_model

    quiet_libraries()
    spec = TinyModelConfig(
        pretrain_steps=pretrain_steps,
        hidden_size=hidden_size,
        num_layers=num_layers,
        vocab_size=vocab_size,
    )
    summary = build_tiny_model(out_dir, spec, seed=seed)
    out.print(
        f"tiny model: {summary['parameters']:,} parameters, vocab {summary['vocab_size']}, "
        f"pre-train loss {summary['pretrain_loss_first'] or 0:.2f} -> "
        f"{summary['pretrain_loss_last'] or 0:.2f} -> {out_dir}"
    )
