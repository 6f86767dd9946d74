"""Workers: take jobs from the queue, check their files, and run each in its own process.

A worker is a loop (a thread of the server, or ``tuneforge service worker`` anywhere that
reaches the database and the service root). It claims the oldest job that needs work:

- ``validating_files``: reads the files with the data layer; the job then waits
  ``queued``, or fails with the line-numbered report;
- ``queued``: marks it ``running`` and starts ``python -m tuneforge.service.job``, checking
  in every ``heartbeat_s``. A cancel request, or the worker's own stop, sends the process
  SIGTERM: training saves a checkpoint and stops. A stopped (not cancelled) job is queued
  again and resumes from that checkpoint on the next attempt.

Every loop also queues again the jobs of workers that stopped checking in
(:meth:`~tuneforge.service.store.JobStore.recover`), so a restarted service, or another
replica, picks up what a dead one held.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from tuneforge.service.job import RELEASED
from tuneforge.service.runtime import Runtime
from tuneforge.service.store import FINAL
from tuneforge.service.validate import check_file

log = logging.getLogger("tuneforge.service")
WAIT_S = 0.5  # how soon a stop or a finished process is noticed


def alive(process_id: str) -> bool | None:
    """Whether ``host:pid[:...]`` still runs: None when it is on another machine."""
    host, _, rest = process_id.partition(":")
    if host != socket.gethostname():
        return None
    try:
        os.kill(int(rest.split(":")[0]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return None
    return True


class Worker:
    """One job at a time, until ``stop`` is set.

    Args:
        runtime: The service's config, folders and store.
        name: Tells this worker from the others of its process.
        stop: Set to stop: a running job is checkpointed and queued again.
    """

    def __init__(self, runtime: Runtime, name: str, stop: threading.Event) -> None:
        self.runtime, self.store, self.stop = runtime, runtime.store, stop
        # the token tells a restarted process (same pid, e.g. pid 1 in a container) apart
        self.id = f"{socket.gethostname()}:{os.getpid()}:{name}-{secrets.token_hex(3)}"
        self.settings = runtime.settings

    def run(self, once: bool = False) -> int:
        """Work until stopped (or, with ``once``, until one job has run); returns jobs run."""
        ran = 0
        while not self.stop.is_set():
            self.store.recover(self.settings.stale_after_s, alive)
            job = self.store.claim(self.id, self.settings.limits.max_running_jobs_per_key)
            if job is None:
                self.stop.wait(self.settings.poll_s)
                continue
            try:
                if job["status"] == "validating_files":
                    self.validate(job)
                    continue
                self.train(job)
                ran += 1
            except Exception as err:  # one bad job must not stop the worker
                log.exception("job %s: %s", job["id"], err)
                message = f"the worker failed: {type(err).__name__}: {err}"
                self.store.finish(job["id"], "failed", error=_error("server_error", message))
            if once:
                break
        return ran

    def validate(self, job: dict[str, Any]) -> None:
        """Check the job's files; queue it (released for any worker) or fail it."""
        spec = job["spec"]
        method = spec["method"]["type"]
        for param in ("training_file", "validation_file"):
            file_id = spec[param]
            if not file_id:
                continue
            row = self.store.file(job["tenant"], file_id)
            if row is None:
                message = f"{param} {file_id}: the file was deleted before the job started"
                self._fail_validation(job, _error("invalid_file", message, param))
                return
            limit = self.settings.limits.max_training_tokens if param == "training_file" else None
            check = check_file(
                Path(row["path"]), row["filename"], param, method, self.runtime.tokenizer, limit
            )
            if not check.ok:
                code = "invalid_training_file" if param == "training_file" else "invalid_file"
                self._fail_validation(job, _error(code, check.message(), param))
                return
            if param == "training_file":
                spec["examples"], spec["training_tokens"] = check.examples, check.tokens
        self.store.update_job(
            job["id"],
            expect="validating_files",
            status="queued",
            spec=json.dumps(spec),
            worker=None,
        )
        self.store.add_event(job["id"], "Files validated, moving job to queued state")

    def _fail_validation(self, job: dict[str, Any], error: dict[str, Any]) -> None:
        self.store.finish(job["id"], "failed", error=error)
        self.store.add_event(job["id"], f"Validation failed: {error['message']}", level="error")

    def train(self, job: dict[str, Any]) -> None:
        """Run the job's process to its end, checking in, passing on cancel and stop."""
        job_id = job["id"]
        if not self.store.update_job(
            job_id, expect="queued", status="running", attempts=job["attempts"] + 1
        ):
            self.store.release(job_id, self.id)
            return
        self.store.add_event(job_id, "Fine-tuning job started")
        logs = self.runtime.root / "runs" / job_id
        logs.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "tuneforge.service.job",
            job_id,
            *self.runtime.child_args(),
        ]
        with open(logs / "job.log", "ab") as output:
            child = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, env=self.runtime.child_env()
            )
        self.store.update_job(job_id, process=f"{socket.gethostname()}:{child.pid}")
        code = self._watch(job_id, child)
        final = self.store.job(None, job_id)
        if final is None or final["status"] in FINAL:
            return
        if code == RELEASED or self.stop.is_set():
            self.store.release(job_id, self.id)
            self.store.add_event(job_id, "Job queued again; it resumes from its last checkpoint")
        elif final["cancel_requested"]:
            self.store.finish(job_id, "cancelled")
            self.store.add_event(job_id, "Job cancelled")
        else:
            message = f"the training process ended with exit code {code}; see {logs / 'job.log'}"
            self.store.finish(job_id, "failed", error=_error("training_failed", message))
            self.store.add_event(job_id, f"Job failed: {message}", level="error")

    def _watch(self, job_id: str, child: subprocess.Popen[bytes]) -> int:
        """Wait for the job's process; check in every heartbeat, pass on cancel and stop."""
        signalled, since_beat = False, 0.0
        while True:
            try:
                return child.wait(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                since_beat += WAIT_S
            wanted = self.stop.is_set()
            if since_beat >= self.settings.heartbeat_s or wanted:
                since_beat = 0.0
                current = self.store.beat(job_id, self.id)
                wanted = wanted or current is None or bool(current["cancel_requested"])
            if wanted and not signalled:
                child.send_signal(signal.SIGTERM)  # training checkpoints, then stops
                signalled = True


def _error(code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param}
