"""`tuneforge reward score`: score prompt/response pairs with a trained reward model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tuneforge.console import out

reward_app = typer.Typer(help="Use trained reward models.", no_args_is_help=True)

ModelArg = Annotated[
    str,
    typer.Argument(help="A reward model folder (a run's export/merged), or run:NAME."),
]


@reward_app.command("score")
def score(
    model: ModelArg,
    file: Annotated[
        Path,
        typer.Argument(help="JSONL: 'messages' (last = the reply) or 'prompt' + 'response'."),
    ],
    output: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write {id, score} JSONL here.")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 16,
    runs_dir: Annotated[str, typer.Option("--runs-dir", help="Where run:NAME is found.")] = "runs",
) -> None:
    """Score each line of FILE; print the count and mean, and the scores (or write --out)."""
    from tuneforge.config.load import resolve_run_reference
    from tuneforge.models.hardware import device
    from tuneforge.train.reward import RewardModel, read_scoring_file

    folder = resolve_run_reference(model, runs_dir, "MODEL")
    items = list(read_scoring_file(file))
    scorer = RewardModel(folder, device=device(), batch_size=batch_size)
    scores = scorer.score([conversation for _, conversation in items])
    lines = [
        json.dumps({"id": key, "score": round(value, 6)})
        for (key, _), value in zip(items, scores, strict=True)
    ]
    if output is not None:
        output.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    else:
        for line in lines:
            print(line)
    mean = sum(scores) / len(scores) if scores else float("nan")
    out.print(f"scored {len(scores)} responses from {file}: mean {mean:.4f}", highlight=False)
