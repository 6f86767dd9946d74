"""One parallel worker of ``tuneforge tune``: ``python -m tuneforge.tune.worker JOB INDEX``.

The job file (written by :func:`tuneforge.tune.optuna_search.run_workers`) holds
the resolved base config and the budget; the worker runs trials on the shared
study until it has enough, and stops when its parent process is gone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tuneforge.console import err
from tuneforge.errors import TrainingStopped, TuneforgeError


def main(argv: list[str]) -> int:
    """Run trials for the job in ``argv[0]`` as worker ``argv[1]``; returns the exit code."""
    import torch

    from tuneforge.config import Config
    from tuneforge.tune.optuna_search import Budget, work

    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    torch.set_num_threads(job["threads"])
    config = Config.model_validate(job["config"])
    try:
        work(config, job["config_file"], Budget(**job["budget"]), int(argv[1]), job["parent"])
    except (TrainingStopped, KeyboardInterrupt):
        return 0  # the trial was queued again; the next `tuneforge tune` runs it
    except TuneforgeError as error:
        err.print(f"[bold red]error:[/bold red] tune worker {argv[1]}: {error}", soft_wrap=True)
        return error.exit_code or 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
