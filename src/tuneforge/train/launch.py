"""Run the training recipe in this process, or in N processes through torchrun / accelerate.

``tuneforge train --nproc N`` keeps the run directory and the stage machinery in
this process and starts N workers (:mod:`tuneforge.train.worker`) with
``torchrun --standalone`` (or ``accelerate launch --config_file F`` for the FSDP
and DeepSpeed presets in ``deploy/accelerate/``). The workers read a job file,
train with data parallelism, and rank 0 writes the outputs, the metrics and the
summary; this process waits and hands the summary to the stage.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuneforge.config import Config, dump_config
from tuneforge.errors import ConfigError, StageFailed, TrainingStopped

JOB = "job.json"
SUMMARY = "summary.json"


def train_in_processes(
    config: Config,
    model_path: str,
    data_dir: Path,
    out_dir: Path,
    *,
    checkpoints: Path,
    key: str,
    resume: bool,
    nproc: int,
    launcher_config: str | None,
    log: Callable[..., None],
    metrics_path: Path,
    resume_hint: str,
) -> dict[str, Any]:
    """Train in this process (``nproc`` 1, no launcher config) or in launched workers."""
    if nproc == 1 and launcher_config is None:
        from tuneforge.train.recipes import train

        return train(
            config,
            model_path,
            data_dir,
            out_dir,
            checkpoints=checkpoints,
            key=key,
            resume=resume,
            log=log,
            resume_hint=resume_hint,
        )
    job_dir = out_dir / ".job"
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "config.yaml").write_text(dump_config(config), encoding="utf-8")
    job = {
        "config": str(job_dir / "config.yaml"),
        "model_path": model_path,
        "data_dir": str(data_dir),
        "out_dir": str(out_dir),
        "checkpoints": str(checkpoints),
        "key": key,
        "resume": resume,
        "metrics_path": str(metrics_path),
        "summary": str(job_dir / SUMMARY),
        "resume_hint": resume_hint,
    }
    (job_dir / JOB).write_text(json.dumps(job, indent=2))
    command = launch_command(nproc, launcher_config, job_dir / JOB)
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": _threads(nproc)})
    summary_file = job_dir / SUMMARY
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
    shutil.rmtree(job_dir, ignore_errors=True)
    if summary is not None and "stopped" in summary:
        raise TrainingStopped(summary["stopped"])
    if done.returncode != 0 or summary is None:
        raise StageFailed(
            f"training workers exited with status {done.returncode} ({' '.join(command[:4])} ...)"
        )
    return summary


def launch_command(nproc: int, launcher_config: str | None, job: Path) -> list[str]:
    """torchrun for plain data parallelism; accelerate launch with a preset otherwise."""
    worker = ["-m", "tuneforge.train.worker", str(job)]
    if launcher_config is not None:
        if not Path(launcher_config).is_file():
            raise ConfigError(f"--launcher-config {launcher_config!r}: file not found")
        accelerate = shutil.which("accelerate") or "accelerate"
        return [
            accelerate,
            "launch",
            "--config_file",
            launcher_config,
            "--num_processes",
            str(nproc),
            *worker,
        ]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        *worker,
    ]


def _threads(nproc: int) -> str:
    """Share the CPU cores between the workers instead of oversubscribing them."""
    return str(max(1, (os.cpu_count() or 1) // nproc))
