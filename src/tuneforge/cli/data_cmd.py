"""`tuneforge data ...`: dataset commands."""

from __future__ import annotations

import typer

from tuneforge.cli import data_convert, data_inspect, data_labelstudio, data_oasst, data_synth
from tuneforge.cli.common import ConfigArg, ForceOpt, NewRunOpt, SetOpt, open_pipeline
from tuneforge.console import out

data_app = typer.Typer(
    help="Datasets: prepare (clean, dedup, scrub, split, render), convert, inspect, label, synth.",
    no_args_is_help=True,
)


@data_app.command("prepare")
def data_prepare(
    config: ConfigArg, set_: SetOpt = None, force: ForceOpt = False, new_run: NewRunOpt = False
) -> None:
    """Synthesize (synth.auto), then read, clean, render and split the data into the run."""
    with open_pipeline(config, set_, force, new_run, synthesize=True) as pipeline:
        result = pipeline.execute("data")
    books = result.summary
    dropped = sum(books["dropped"].values())
    out.print(
        f"read {books['read']}: kept {books['kept']}, dropped {dropped}, "
        f"quarantined {books['quarantined']} | splits {books['splits']} -> {result.path}"
    )
    if "mix" in books:
        taken = ", ".join(
            f"{name} {row['taken'] + row['repeated']}"
            for name, row in books["mix"]["sources"].items()
        )
        out.print(f"mix ({books['mix']['strategy']}): {taken}")


data_app.command("convert")(data_convert.convert)
data_app.command("inspect")(data_inspect.inspect)
data_app.command("convert-oasst")(data_oasst.convert_oasst)
data_app.command("synth")(data_synth.synth)
data_app.add_typer(data_labelstudio.labelstudio_app, name="labelstudio")
