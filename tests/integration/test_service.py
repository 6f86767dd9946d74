"""Fine-tuning as a service, driven by the official ``openai`` client against the real server.

One service (the tiny base, one worker) runs three jobs in turn: one to ``succeeded`` and
then chat with its ``ft:`` model, one cancelled mid-run, one that survives a restart of the
service. Bad uploads fail in ``validating_files`` with line-numbered reports.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests_support import cli_command, cli_env

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
TICKETS = REPO / "examples" / "data" / "support_tickets.jsonl"
KEYS = "alice:key-alice,bob:key-bob"
SETTINGS = [
    "service.limits.max_file_bytes=700000",
    "service.limits.max_training_tokens=150000",  # the tickets file has about 89k
    "service.heartbeat_s=1",
    "data.max_samples=400",
    "eval.max_new_tokens=24",
    "eval.bias.enabled=false",  # the gates need the safety suite, not these
    "eval.retention.enabled=false",
]


class Service:
    """``tuneforge service start`` in a subprocess; restartable on the same root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["service", "start", str(REPO / "examples" / "service.yaml")]
        args += ["--port", str(self.port), "--set", f"service.root={self.root}"]
        for item in SETTINGS:
            args += ["--set", item]
        log = open(self.root.parent / "service.log", "ab")  # noqa: SIM115 - the process owns it
        env = {**cli_env(), "TUNEFORGE_API_KEYS": KEYS}
        self.process = subprocess.Popen(cli_command(*args), stdout=log, stderr=log, env=env)
        deadline = time.time() + 600
        while time.time() < deadline:
            assert self.process.poll() is None, (self.root.parent / "service.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                time.sleep(0.5)
        self.client("alice").models.list()  # answers once the model is loaded

    def stop(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=180) == 0

    def client(self, who: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"http://127.0.0.1:{self.port}/v1", api_key=f"key-{who}", max_retries=5
        )


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = Service(tmp_path_factory.mktemp("service") / "root")
    service.start()
    yield service
    if service.process is not None and service.process.poll() is None:
        service.stop()


def wait_for(client, job_id: str, statuses: tuple[str, ...], timeout: float = 600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        time.sleep(1)
    raise AssertionError(f"job {job_id} still {job.status} after {timeout}s")


def events(client, job_id: str) -> list:
    return list(client.fine_tuning.jobs.list_events(job_id, limit=100))  # every page


def upload(client, path: Path):
    with open(path, "rb") as handle:
        return client.files.create(file=handle, purpose="fine-tune")


def test_a_job_succeeds_and_its_model_is_served_at_once(service: Service) -> None:
    alice, bob = service.client("alice"), service.client("bob")
    file = upload(alice, TICKETS)
    assert (file.purpose, file.bytes, file.filename) == (
        "fine-tune",
        TICKETS.stat().st_size,
        "support_tickets.jsonl",
    )
    hyper = {"n_epochs": 2, "learning_rate_multiplier": 1.0}
    job = alice.fine_tuning.jobs.create(
        model="tiny",
        training_file=file.id,
        suffix="support",
        seed=7,
        method={"type": "supervised", "supervised": {"hyperparameters": hyper}},
    )
    assert job.status == "validating_files" and job.hyperparameters.batch_size == 16
    with pytest.raises(openai.NotFoundError):  # another key sees neither the job nor the file
        bob.fine_tuning.jobs.retrieve(job.id)
    with pytest.raises(openai.NotFoundError):
        bob.files.retrieve(file.id)
    assert [j.id for j in bob.fine_tuning.jobs.list()] == []

    done = wait_for(alice, job.id, ("succeeded", "failed", "cancelled"))
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == f"ft:tiny:support:{job.id}" and done.trained_tokens > 0
    messages = [e.message for e in events(alice, job.id)]
    assert messages[0] == "The job has successfully completed"
    assert "Files validated, moving job to queued state" in messages
    steps = [e for e in events(alice, job.id) if e.type == "metrics" and "train_loss" in e.data]
    assert steps and steps[0].data["step"] == steps[0].data["total_steps"]
    checkpoints = list(alice.fine_tuning.jobs.checkpoints.list(job.id))
    assert checkpoints and checkpoints[0].step_number == steps[0].data["step"]
    assert checkpoints[0].fine_tuned_model_checkpoint.startswith(done.fine_tuned_model)

    # the eval report and model card are result files; the gates held
    names = {alice.files.retrieve(i).filename: i for i in done.result_files}
    assert set(names) == {"step_metrics.csv", "eval_report.json", "model_card.md"}
    report = json.loads(alice.files.content(names["eval_report.json"]).content)
    assert report["values"]["tuned"]["perplexity"] <= report["values"]["base"]["perplexity"]
    assert "step,train_loss,valid_loss" in alice.files.content(names["step_metrics.csv"]).text

    assert done.fine_tuned_model in [m.id for m in alice.models.list()]
    prompt = json.loads(TICKETS.read_text().splitlines()[0])["messages"][:-1]
    reply = alice.chat.completions.create(
        model=done.fine_tuned_model, messages=prompt, max_tokens=24, temperature=0
    )
    base = alice.chat.completions.create(
        model="tiny", messages=prompt, max_tokens=24, temperature=0
    )
    assert reply.choices[0].message.content.startswith('{"team": "')
    assert reply.choices[0].message.content != base.choices[0].message.content
    with pytest.raises(openai.NotFoundError):  # the full name, or nothing
        alice.chat.completions.create(
            model=f"ft:tiny:other:{job.id}", messages=prompt, max_tokens=4
        )


def test_bad_uploads_fail_in_validating_files_with_the_line(
    service: Service, tmp_path: Path
) -> None:
    alice = service.client("alice")
    lines = TICKETS.read_text().splitlines()
    no_reply = json.loads(lines[1])
    no_reply["messages"] = no_reply["messages"][:-1]
    cases = {
        "not_json.jsonl": "team,priority\nbilling,high\n",
        "no_reply.jsonl": "\n".join([lines[0], json.dumps(no_reply), lines[2]]) + "\n",
        "too_many_tokens.jsonl": "\n".join(lines * 2) + "\n",
    }
    reports = {}
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        job = alice.fine_tuning.jobs.create(model="tiny", training_file=upload(alice, path).id)
        reports[name] = wait_for(alice, job.id, ("failed", "succeeded", "running"), 120)
    for name, job in reports.items():
        assert job.status == "failed" and job.error.code == "invalid_training_file", name
        assert job.error.param == "training_file" and job.fine_tuned_model is None
    assert "not_json.jsonl:1: " in reports["not_json.jsonl"].error.message
    assert "no_reply.jsonl:2: no assistant turn" in reports["no_reply.jsonl"].error.message
    assert "above this service's limit of 150,000" in reports["too_many_tokens.jsonl"].error.message

    big = tmp_path / "big.jsonl"
    big.write_text("\n".join(lines * 3) + "\n")
    with pytest.raises(openai.APIStatusError) as refused:
        upload(alice, big)
    assert refused.value.status_code == 413
    with pytest.raises(openai.BadRequestError, match="cannot be fine-tuned here"):
        alice.fine_tuning.jobs.create(model="gpt-4o", training_file=upload(alice, TICKETS).id)


def test_a_cancelled_job_stops_after_a_checkpoint(service: Service) -> None:
    alice = service.client("alice")
    file = upload(alice, TICKETS)
    job = alice.fine_tuning.jobs.create(
        model="tiny", training_file=file.id, hyperparameters={"n_epochs": 20}
    )
    wait_for(alice, job.id, ("running",))
    deadline = time.time() + 300
    while not any(e.type == "metrics" for e in events(alice, job.id)):
        assert time.time() < deadline
        time.sleep(1)
    alice.fine_tuning.jobs.cancel(job.id)
    done = wait_for(alice, job.id, ("cancelled", "succeeded", "failed"), 120)
    assert done.status == "cancelled" and done.fine_tuned_model is None
    checkpoints = list(alice.fine_tuning.jobs.checkpoints.list(job.id))
    total = next(e.data["total_steps"] for e in events(alice, job.id) if e.type == "metrics")
    assert checkpoints and 0 < checkpoints[0].step_number < total
    assert job.id not in " ".join(m.id for m in alice.models.list())
    with pytest.raises(openai.BadRequestError, match="already cancelled"):
        alice.fine_tuning.jobs.cancel(job.id)


def test_a_restart_of_the_service_resumes_the_running_job(service: Service) -> None:
    alice = service.client("alice")
    job = alice.fine_tuning.jobs.create(
        model="tiny", training_file=upload(alice, TICKETS).id, hyperparameters={"n_epochs": 3}
    )
    wait_for(alice, job.id, ("running",))
    deadline = time.time() + 300
    while not any(e.type == "metrics" for e in events(alice, job.id)):
        assert time.time() < deadline
        time.sleep(1)
    service.stop()  # SIGTERM: the job checkpoints and goes back to the queue
    service.start()
    done = wait_for(service.client("alice"), job.id, ("succeeded", "failed", "cancelled"))
    assert done.status == "succeeded", done.error
    messages = [e.message for e in events(service.client("alice"), job.id)]
    assert "Resuming from the last checkpoint" in messages
    assert any(m.startswith("Job paused: stopped by SIGTERM") for m in messages)
    log = (service.root / "runs" / job.id / "job.log").read_text()
    assert "resumed from" in log
    assert os.path.isdir(service.root / "models" / job.id)
