"""The service's queue on SQLite and on a real PostgreSQL server: ownership, order, claims."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tuneforge.service.store import JobStore


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    from postgres_support import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> JobStore:
    if request.param == "sqlite":
        return JobStore(f"sqlite:///{tmp_path / 'queue.sqlite'}")
    store = JobStore(request.getfixturevalue("postgres_url"))
    from tuneforge.service.store import meta

    with store.engine.begin() as connection:  # each test starts from empty tables
        for table in reversed(meta.sorted_tables):
            connection.execute(table.delete())
    return store


def spec(file_id: str = "file-x") -> dict:
    method = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}}
    return {"model": "tiny", "training_file": file_id, "validation_file": None, "method": method}


def test_files_belong_to_their_key(store: JobStore) -> None:
    row = store.add_file(
        "alice", filename="a.jsonl", purpose="fine-tune", bytes=10, sha256="0", path="p"
    )
    store.add_file(
        "alice", filename="r.csv", purpose="fine-tune-results", bytes=99, sha256="0", path=""
    )
    assert store.file("alice", row["id"])["filename"] == "a.jsonl"
    assert store.file("bob", row["id"]) is None and store.delete_file("bob", row["id"]) is None
    assert store.stored_bytes("alice") == 10 and store.stored_bytes("bob") == 0  # results free
    assert [f["filename"] for f in store.files_of("alice")] == ["r.csv", "a.jsonl"]
    assert store.delete_file("alice", row["id"])["id"] == row["id"]
    assert store.file("alice", row["id"]) is None


def test_jobs_page_newest_first_and_count_as_active(store: JobStore) -> None:
    ids = [store.create_job("alice", spec())["id"] for _ in range(5)]
    store.create_job("bob", spec())
    page, more = store.jobs_of("alice", None, 2)
    assert [j["id"] for j in page] == ids[::-1][:2] and more
    page, more = store.jobs_of("alice", page[-1]["id"], 10)
    assert [j["id"] for j in page] == ids[::-1][2:] and not more
    with pytest.raises(KeyError):
        store.jobs_of("bob", ids[0], 10)  # another key's job is no cursor either
    assert store.active_jobs("alice") == 5
    assert store.finish(ids[0], "failed", error={"code": "x", "message": "m", "param": None})
    assert not store.finish(ids[0], "succeeded")  # a finished job stays finished
    assert store.active_jobs("alice") == 4 and store.job(None, ids[0])["error"]["code"] == "x"
    assert store.job("alice", ids[0])["spec"]["model"] == "tiny"


def test_claims_go_oldest_first_and_wait_for_a_busy_key(store: JobStore) -> None:
    a1, a2 = (store.create_job("alice", spec())["id"] for _ in range(2))
    b1 = store.create_job("bob", spec())["id"]
    for job_id in (a1, a2, b1):
        store.update_job(job_id, status="queued")
    first = store.claim("w1", max_running_per_tenant=1)
    assert first["id"] == a1 and first["worker"] == "w1"
    store.update_job(a1, status="running")
    assert store.claim("w2", max_running_per_tenant=1)["id"] == b1  # alice runs one already
    assert store.claim("w3", max_running_per_tenant=1) is None
    assert store.claim("w3", max_running_per_tenant=2)["id"] == a2


def test_concurrent_workers_claim_each_job_exactly_once(store: JobStore) -> None:
    ids = []
    for number in range(24):
        ids.append(store.create_job(f"t{number}", spec())["id"])
        store.update_job(ids[-1], status="queued")
    claimed: list[str] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        while (job := store.claim(name, max_running_per_tenant=5)) is not None:
            with lock:
                claimed.append(job["id"])

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(claimed) == sorted(ids)  # none twice, none missed


def test_cancel_is_at_once_for_a_waiting_job_and_a_request_for_a_held_one(store: JobStore) -> None:
    waiting = store.create_job("alice", spec())["id"]
    held = store.create_job("alice", spec())["id"]
    store.update_job(held, status="queued")
    store.update_job(waiting, status="queued", worker=None)
    store.claim("w1", 1)  # takes the older one: waiting
    store.update_job(waiting, worker=None)
    store.update_job(held, worker="w1", status="running")
    assert store.request_cancel("bob", held) is None
    assert store.request_cancel("alice", waiting)["status"] == "cancelled"
    row = store.request_cancel("alice", held)
    assert row["status"] == "running" and row["cancel_requested"]
    messages = [e["message"] for e in store.events_of(waiting, None, 10)[0]]
    assert messages[0] == "Job cancelled before it started"


def test_recover_frees_the_jobs_of_stale_or_dead_workers_only(store: JobStore) -> None:
    jobs = [store.create_job("alice", spec())["id"] for _ in range(5)]
    now = time.time()
    store.update_job(jobs[0], status="running", worker="far:1:w", heartbeat=now - 600)
    store.update_job(jobs[1], status="running", worker="far:2:w", heartbeat=now)
    store.update_job(jobs[2], status="running", worker="here:3:w", heartbeat=now)
    store.update_job(jobs[3], status="running", worker="here:4:w", process="here:5", heartbeat=0)
    store.update_job(jobs[4], status="running", worker="here:6:w", heartbeat=now - 600)

    def alive(process: str) -> bool | None:  # here:6 lives, but silent: a new process, same pid
        return None if process.startswith("far") else process in ("here:5", "here:6:w")

    assert store.recover(60, alive) == [jobs[0], jobs[2], jobs[4]]
    statuses = [store.job(None, j)["status"] for j in jobs]
    assert statuses == ["queued", "running", "queued", "running", "queued"]
    assert store.job(None, jobs[0])["worker"] is None


def test_events_and_checkpoints_page_newest_first(store: JobStore) -> None:
    job = store.create_job("alice", spec())["id"]
    for step in range(1, 6):
        store.add_event(job, f"step {step}", kind="metrics", data={"step": step})
    page, more = store.events_of(job, None, 3)
    assert [e["message"] for e in page] == ["step 5", "step 4", "step 3"] and more
    page, more = store.events_of(job, page[-1]["id"], 10)
    assert [e["data"] for e in page][:2] == [{"step": 2}, {"step": 1}] and not more
    assert page[-1]["message"].startswith("Validating training file")
    assert store.add_checkpoint(job, 10, {"step": 10}) and not store.add_checkpoint(job, 10, {})
    store.add_checkpoint(job, 20, {"step": 20, "train_loss": 0.5})
    rows, _ = store.checkpoints_of(job, None, 10)
    assert [(r["step"], r["metrics"].get("train_loss")) for r in rows] == [(20, 0.5), (10, None)]
