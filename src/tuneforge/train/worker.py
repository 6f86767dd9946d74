"""One training process started by torchrun / accelerate launch (see :mod:`tuneforge.train.launch`).

Usage: ``python -m tuneforge.train.worker JOB.json`` under a launcher. Every
rank trains; rank 0 appends the metrics and writes the summary (or, after a
signal, the message saying how to resume) next to the job file.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from tuneforge.config.load import load_config
from tuneforge.console import quiet_libraries
from tuneforge.errors import TrainingStopped
from tuneforge.train.recipes import train


def main(job_file: str) -> int:
    job = json.loads(Path(job_file).read_text())
    quiet_libraries()
    config = load_config(Path(job["config"]), None)
    metrics = Path(job["metrics_path"])
    rank0 = _rank() == 0

    def log(**values: Any) -> None:
        if rank0:
            line = {"time": round(time.time(), 3), "stage": "train", **values}
            with open(metrics, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(line) + "\n")

    try:
        summary = train(
            config,
            job["model_path"],
            Path(job["data_dir"]),
            Path(job["out_dir"]),
            checkpoints=Path(job["checkpoints"]),
            key=job["key"],
            resume=job["resume"],
            log=log,
            resume_hint=job["resume_hint"],
        )
    except TrainingStopped as stopped:
        summary = {"stopped": str(stopped)}
    if rank0:
        Path(job["summary"]).write_text(json.dumps(summary))
    return 0


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
