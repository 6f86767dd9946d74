"""`tuneforge feedback sample` and `tuneforge feedback pairs`: the human ranking loop."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tuneforge.console import out

feedback_app = typer.Typer(
    help="Collect human rankings of sampled replies and turn them into preference pairs.",
    no_args_is_help=True,
)


@feedback_app.command("sample")
def sample(
    model: Annotated[
        str, typer.Argument(help="The model to sample from: a folder, hub id, or run:NAME.")
    ],
    prompts: Annotated[
        Path, typer.Option("--prompts", help="Chat, alpaca or preference records to prompt with.")
    ],
    output: Annotated[Path, typer.Option("--out", "-o", help="The JSONL file to label.")],
    k: Annotated[int, typer.Option("-k", min=2, help="Replies per prompt.")] = 4,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1)] = 128,
    temperature: Annotated[float, typer.Option("--temperature", min=0.01)] = 1.0,
    seed: Annotated[int, typer.Option("--seed")] = 42,
    runs_dir: Annotated[str, typer.Option("--runs-dir", help="Where run:NAME is found.")] = "runs",
) -> None:
    """Write K sampled replies per prompt, unranked, for people to rank."""
    from transformers import set_seed

    from tuneforge.config.load import resolve_run_reference
    from tuneforge.data.feedback import read_prompts, write_labelling_file
    from tuneforge.data.render import render_prompt_batch
    from tuneforge.models.hardware import device
    from tuneforge.models.load import load_model, load_tokenizer
    from tuneforge.train.rollout import sample_completions, stop_ids

    folder = resolve_run_reference(model, runs_dir, "MODEL")
    set_seed(seed)
    tokenizer = load_tokenizer(folder)
    policy = load_model(folder, device=device())
    found = read_prompts(prompts)
    ids = render_prompt_batch(tokenizer, [(messages, tools) for _, messages, tools in found])
    replies: list[list[str]] = []
    for start in range(0, len(ids), 8):
        completions = sample_completions(
            policy,
            ids[start : start + 8],
            n=k,
            max_new_tokens=max_new_tokens,
            pad_id=tokenizer.pad_token_id,
            stop=stop_ids(policy, tokenizer),
            temperature=temperature,
        )
        texts = [t.strip() for t in tokenizer.batch_decode(completions, skip_special_tokens=True)]
        replies += [texts[i : i + k] for i in range(0, len(texts), k)]
    written = write_labelling_file(output, found, replies)
    out.print(
        f"wrote {written} prompts x {k} replies to {output}: set each reply's rank "
        "(1 = best) or add a 'ranking' list, then run `tuneforge feedback pairs`",
        highlight=False,
    )


@feedback_app.command("pairs")
def pairs(
    labelled: Annotated[Path, typer.Argument(help="A ranked file (from feedback sample).")],
    output: Annotated[Path, typer.Option("--out", "-o", help="Preference pairs (JSONL).")],
) -> None:
    """Turn ranked replies into preference pairs: rank 1 against each lower rank."""
    from tuneforge.data.feedback import labelled_pairs

    books = labelled_pairs(labelled, output)
    out.print(
        f"read {books['records']} records: {books['pairs']} pairs -> {output}, "
        f"{books['unlabelled']} not usable",
        highlight=False,
    )
    for reason, count in sorted(books["reasons"].items(), key=lambda kv: -kv[1]):
        out.print(f"  {count} x {reason}", highlight=False)
