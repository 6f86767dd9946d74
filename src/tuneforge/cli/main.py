"""The `tuneforge` command: parse, call the stage, turn errors into one line and an exit code.

Exit codes: 0 success, 1 runtime failure, 2 usage or config error, 3 failed quality gate.
"""

from __future__ import annotations

import sys
import traceback

import typer
import typer.main
from rich.markup import escape

from tuneforge import __version__
from tuneforge.cli import (
    adapters_cmd,
    config_cmd,
    data_cmd,
    feedback_cmd,
    lineage_cmd,
    models_cmd,
    plan_cmd,
    reward_cmd,
    runs_cmd,
    serve_cmd,
    service_cmd,
    stages,
    tune_cmd,
    ui_cmd,
)
from tuneforge.console import err
from tuneforge.errors import TuneforgeError

app = typer.Typer(
    name="tuneforge",
    help="From raw domain data to a fine-tuned, evaluated, exported LLM.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"tuneforge {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
) -> None:
    """tuneforge: clean, tune, prove, export."""


app.command("run")(stages.run)
app.add_typer(data_cmd.data_app, name="data")
app.command("train")(stages.train)
app.command("eval")(stages.eval_)
app.command("export")(stages.export)
app.add_typer(config_cmd.config_app, name="config")
app.add_typer(models_cmd.models_app, name="models")
app.add_typer(adapters_cmd.adapters_app, name="adapters")
app.command("plan")(plan_cmd.plan)
app.command("tune")(tune_cmd.tune)
app.command("serve")(serve_cmd.serve)
app.add_typer(service_cmd.service_app, name="service")
app.command("ui")(ui_cmd.ui)
app.add_typer(reward_cmd.reward_app, name="reward")
app.add_typer(feedback_cmd.feedback_app, name="feedback")
app.command("lineage")(lineage_cmd.lineage)
app.add_typer(runs_cmd.runs_app, name="runs")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns (and exits with) the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="tuneforge", standalone_mode=False)
        code = 0
    except typer.Exit as exit_:
        code = exit_.exit_code
    except typer.Abort:
        err.print("aborted")
        code = 130
    except typer.TyperException as usage:  # click's usage errors, as vendored by typer
        usage.show()
        code = getattr(usage, "exit_code", 2)
    except KeyboardInterrupt:
        err.print("interrupted")
        code = 130
    except TuneforgeError as error:
        if debug:
            traceback.print_exc()
        label = "" if error.exit_code == 0 else "[bold red]error:[/bold red] "
        err.print(f"{label}{escape(str(error))}", soft_wrap=True)
        code = error.exit_code
    except Exception as error:  # anything unplanned is a runtime failure, exit 1
        if debug:
            traceback.print_exc()
        first = (str(error).strip().splitlines() or [""])[0]
        err.print(
            f"[bold red]error:[/bold red] {type(error).__name__}: {escape(first)} "
            "(rerun with --debug for a traceback)",
            soft_wrap=True,
        )
        code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
