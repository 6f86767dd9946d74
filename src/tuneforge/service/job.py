"""One job in its own process: the tuneforge pipeline on the job's files, with its gates.

``python -m tuneforge.service.job JOB_ID CONFIG [--set KEY=VALUE ...]`` is what a worker
starts. Progress goes to the job's events as it trains, checkpoints to its checkpoint
list, and the end to the job's row: ``succeeded`` (the adapter published to the models
folder under its ``ft:`` name, the eval report, model card and step metrics as result
files), ``failed`` (with OpenAI's error object), or ``cancelled``.

SIGTERM stops the job: in training after a checkpoint, elsewhere at once. The process
then exits with :data:`RELEASED` (the worker queues the job again, and the next attempt
resumes from the checkpoint) unless the job was cancelled. The process also gets SIGTERM
when the worker that started it dies.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from tuneforge.errors import ConfigError, DataError, GateFailed, TrainingStopped
from tuneforge.serve.registry import NAME_FILE, fine_tuned_name
from tuneforge.service.objects import RESULTS_PURPOSE
from tuneforge.service.runtime import Runtime

RELEASED = 75  # EX_TEMPFAIL: stopped, not finished; queue the job again


def job_config(runtime: Runtime, job: dict[str, Any], base_path: str) -> Any:
    """The service config with the job's files, objective, seed and hyper-parameters, on
    the base model the service serves (``base_path``: the tiny model is built once, with
    the service's seed, not again with each job's)."""
    spec = job["spec"]
    method = spec["method"]["type"]
    hyper = spec["method"][method]["hyperparameters"]
    files = runtime.root / "files"
    training = str(files / f"{spec['training_file']}.jsonl")
    base = runtime.config
    changes: dict[str, Any] = {
        "model.name_or_path": base_path,
        "seed": spec["seed"],
        "objective": "sft" if method == "supervised" else "dpo",
        "train.epochs": hyper["n_epochs"],
        "train.batch_size": hyper["batch_size"],
        "train.lr": base.train.lr * hyper["learning_rate_multiplier"],
        "export.formats": ["adapter"],
        "data.format": "openai" if method == "supervised" else "preference",
    }
    if method == "dpo":
        changes["preference.beta"] = hyper["beta"]
    if base.train.save_every is None and spec.get("examples"):  # about once an epoch
        held_out = base.data.test_fraction + (
            0 if spec["validation_file"] else base.data.val_fraction
        )
        per_step = hyper["batch_size"] * base.train.grad_accum
        every = max(1, round(spec["examples"] * (1 - held_out) / per_step))
        changes["train.save_every"] = every
        if base.train.eval_every is None:
            changes["train.eval_every"] = every
    if spec["validation_file"]:
        validation = str(files / f"{spec['validation_file']}.jsonl")
        changes["data.path"] = None
        changes["data.val_fraction"] = 0.0
        changes["data.sources"] = [
            {"path": training, "name": "training"},
            {"path": validation, "name": "validation", "split": "val"},
        ]
    else:
        changes["data.path"] = training
    return runtime.job_config_raw(job["id"], changes)


class Progress:
    """The training log as job events (about ``budget`` of them) and checkpoint rows."""

    def __init__(self, runtime: Runtime, job_id: str, checkpoints: Path, budget: int) -> None:
        self.store, self.job_id, self.checkpoints = runtime.store, job_id, checkpoints
        self.budget = budget
        self.last: dict[str, float] = {}

    def __call__(self, line: dict[str, Any]) -> None:
        step, total = int(line.get("step", 0)), int(line.get("total_steps") or 0)
        if "loss" in line:
            self.last["train_loss"] = float(line["loss"])
            every = max(1, math.ceil(total / self.budget)) if total else 1
            if step % every == 0 or step == total:
                data = {"step": step, "total_steps": total, "train_loss": line["loss"]}
                message = f"Step {step}/{total}: training loss={line['loss']:.4f}"
                self.store.add_event(self.job_id, message, kind="metrics", data=data)
        if "val_loss" in line:
            self.last["valid_loss"] = float(line["val_loss"])
            data = {"step": step, "valid_loss": line["val_loss"]}
            message = f"Step {step}: validation loss={line['val_loss']:.4f}"
            self.store.add_event(self.job_id, message, kind="metrics", data=data)
        self.record_checkpoints()

    def record_checkpoints(self) -> None:
        """A checkpoint row for each finished step-N folder not recorded yet."""
        if not self.checkpoints.is_dir():
            return
        for folder in sorted(self.checkpoints.glob("step-*")):  # renamed into place whole
            step = int(folder.name.removeprefix("step-"))
            metrics = {"step": step, **self.last}
            if self.store.add_checkpoint(self.job_id, step, metrics):
                self.store.add_event(self.job_id, f"Checkpoint saved at step {step}")


def run_job(runtime: Runtime, job_id: str) -> int:
    """Train, evaluate, gate and publish one job; returns the process's exit code."""
    from tuneforge.pipeline import Pipeline
    from tuneforge.runs import create_run, latest_run

    store = runtime.store
    job = store.job(None, job_id)
    if job is None or job["status"] != "running":
        return 0
    config = job_config(runtime, job, runtime.base_model_path())
    run = latest_run(config) or create_run(config, runtime.config_file)
    checkpoints = run.path / "checkpoints" / "train"
    resume = checkpoints.is_dir() and any(checkpoints.glob("step-*"))
    progress = Progress(runtime, job_id, checkpoints, runtime.settings.events_per_job)
    if resume:
        store.add_event(job_id, "Resuming from the last checkpoint")
    pipeline = Pipeline(
        config=config,
        run=run,
        config_file=str(runtime.config_file),
        resume=resume,
        on_train_log=progress,
    )
    try:
        with pipeline:
            for stage in ("data", "train", "eval"):
                result = pipeline.execute(stage)
                if stage == "train":
                    progress.record_checkpoints()
                    store.add_event(job_id, f"Trained {result.summary['steps']} steps")
            pipeline.check_gates()
            store.add_event(job_id, "Evaluation passed every gate")
            pipeline.execute("export")
    except TrainingStopped as err:
        progress.record_checkpoints()
        if (store.job(None, job_id) or {}).get("cancel_requested"):
            store.finish(job_id, "cancelled")
            store.add_event(job_id, f"Job cancelled: {err}")
            return 0
        store.add_event(job_id, f"Job paused: {err}", level="warn")
        return RELEASED
    except GateFailed as err:
        return _fail(runtime, job_id, "gate_failed", str(err), None)
    except DataError as err:  # the data stage cannot use the files
        return _fail(runtime, job_id, "invalid_training_file", str(err), "training_file")
    except ConfigError as err:  # the service config does not fit this job (e.g. a gate's metric)
        return _fail(runtime, job_id, "invalid_configuration", str(err), None)
    except Exception as err:  # the job fails; the worker lives on
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return _fail(runtime, job_id, "training_failed", f"{type(err).__name__}: {first}", None)
    name = publish(runtime, job, pipeline)
    store.add_event(job_id, f"New fine-tuned model created: {name}")
    store.add_event(job_id, "The job has successfully completed")
    return 0


def publish(runtime: Runtime, job: dict[str, Any], pipeline: Any) -> str:
    """Put the adapter in the models folder (atomically), record the results, mark done."""
    spec = job["spec"]
    name = fine_tuned_name(runtime.base_name, spec["suffix"], job["id"])
    export = pipeline.done["export"].path
    target = runtime.root / "models" / job["id"]
    staging = target.with_name(f".{job['id']}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(export / "adapter", staging)
    (staging / NAME_FILE).write_text(name + "\n", encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    evaluation = pipeline.done["eval"].path
    results = [
        ("step_metrics.csv", _step_metrics(pipeline.run.metrics_path)),
        ("eval_report.json", (evaluation / "report.json").read_bytes()),
        ("model_card.md", (export / "README.md").read_bytes()),
    ]
    ids = [_result_file(runtime, job, filename, body) for filename, body in results]
    summary = pipeline.done["train"].summary
    runtime.store.finish(
        job["id"],
        "succeeded",
        fine_tuned_model=name,
        trained_tokens=int(summary.get("trained_tokens") or 0),
        result_files=ids,
    )
    return name


def _result_file(runtime: Runtime, job: dict[str, Any], filename: str, body: bytes) -> str:
    row = runtime.store.add_file(
        job["tenant"],
        filename=filename,
        purpose=RESULTS_PURPOSE,
        bytes=len(body),
        sha256=hashlib.sha256(body).hexdigest(),
        path="",
    )
    path = runtime.root / "files" / f"{row['id']}{Path(filename).suffix}"
    path.write_bytes(body)
    runtime.store.set_file_path(row["id"], str(path))
    return row["id"]


def _step_metrics(metrics_path: Path) -> bytes:
    """OpenAI's result file: step, train_loss, valid_loss per logged step, as CSV."""
    rows: dict[int, dict[str, Any]] = {}
    if metrics_path.is_file():
        for line in metrics_path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record.get("stage") != "train" or "step" not in record:
                continue
            row = rows.setdefault(int(record["step"]), {"step": int(record["step"])})
            if "loss" in record:
                row["train_loss"] = record["loss"]
            if "val_loss" in record:
                row["valid_loss"] = record["val_loss"]
    out = io.StringIO()
    writer = csv.DictWriter(out, ["step", "train_loss", "valid_loss"])
    writer.writeheader()
    writer.writerows(rows[step] for step in sorted(rows))
    return out.getvalue().encode()


def _fail(runtime: Runtime, job_id: str, code: str, message: str, param: str | None) -> int:
    runtime.store.finish(job_id, "failed", error={"code": code, "message": message, "param": param})
    runtime.store.add_event(job_id, f"Job failed: {message}", level="error")
    return 0


def die_with_parent() -> None:
    """SIGTERM this process when the thread that started it ends (Linux; elsewhere a no-op)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the parent was already gone
        os.kill(os.getpid(), signal.SIGTERM)


def _stop(signum: int, _frame: Any) -> None:
    raise TrainingStopped(f"stopped by {signal.Signals(signum).name}")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    job_id, config_file, overrides = args[0], args[1], []
    rest = args[2:]
    while rest:
        flag, value, *rest = rest
        if flag != "--set":
            raise SystemExit(f"unexpected argument {flag!r}")
        overrides.append(value)
    signal.signal(signal.SIGTERM, _stop)  # outside training; the loop saves a checkpoint first
    die_with_parent()
    from tuneforge.console import quiet_libraries

    quiet_libraries()
    return run_job(Runtime.load(config_file, overrides), job_id)


if __name__ == "__main__":
    sys.exit(main())
