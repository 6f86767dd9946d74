"""The service's records: uploaded files, jobs, their events and checkpoints, in one database.

SQLite (one server, the default) or PostgreSQL (several servers and remote workers), through
SQLAlchemy Core. Every row belongs to a tenant (the API key's name); reads and changes made
for a request name the tenant, so a key never sees another key's files or jobs.

Workers claim a job with a conditional update (``WHERE id = ? AND status = ? AND worker IS
NULL``): of two workers racing for one job, exactly one changes the row, on either database.
A claimed job carries its worker's id and a heartbeat; :meth:`JobStore.recover` queues again
a running job whose worker stopped checking in, and it resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tuneforge.service.ids import new_id

ACTIVE = ("validating_files", "queued", "running")
FINAL = ("succeeded", "failed", "cancelled")

meta = sa.MetaData()
files = sa.Table(
    "tf_files",
    meta,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("tenant", sa.String(64), nullable=False, index=True),
    sa.Column("filename", sa.String(255), nullable=False),
    sa.Column("purpose", sa.String(32), nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("created_at", sa.Integer, nullable=False),
)
jobs = sa.Table(
    "tf_jobs",
    meta,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("tenant", sa.String(64), nullable=False, index=True),
    sa.Column("created_at", sa.Integer, nullable=False),
    sa.Column("status", sa.String(32), nullable=False, index=True),
    sa.Column("spec", sa.Text, nullable=False),  # the create request, as resolved (JSON)
    sa.Column("finished_at", sa.Integer),
    sa.Column("fine_tuned_model", sa.Text),
    sa.Column("error", sa.Text),  # JSON: code, message, param
    sa.Column("trained_tokens", sa.BigInteger),
    sa.Column("result_files", sa.Text, nullable=False, default="[]"),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("worker", sa.String(128)),
    sa.Column("process", sa.String(128)),  # host:pid of the process training it
    sa.Column("heartbeat", sa.Float),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
)
events = sa.Table(
    "tf_events",
    meta,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("job_id", sa.String(64), nullable=False, index=True),
    sa.Column("created_at", sa.Integer, nullable=False),
    sa.Column("level", sa.String(8), nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("data", sa.Text),
)
checkpoints = sa.Table(
    "tf_checkpoints",
    meta,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("job_id", sa.String(64), nullable=False, index=True),
    sa.Column("created_at", sa.Integer, nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("metrics", sa.Text, nullable=False),
    sa.UniqueConstraint("job_id", "step"),
)


def open_engine(url: str) -> Engine:
    """A SQLAlchemy engine for ``url`` (WAL and a busy timeout for SQLite); tables created."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(connection: Any, _: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    meta.create_all(engine, checkfirst=True)
    return engine


class JobStore:
    """Files, jobs, events and checkpoints of the service.

    Args:
        url: SQLAlchemy database URL (``sqlite:///...`` or ``postgresql+psycopg://...``).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = open_engine(url)

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as connection:
            yield connection

    # -- files ---------------------------------------------------------------------------

    def add_file(self, tenant: str, **fields: Any) -> dict[str, Any]:
        """Record an uploaded file (``filename``, ``purpose``, ``bytes``, ``sha256``, ``path``)."""
        row = {"id": new_id("file"), "tenant": tenant, "created_at": int(time.time()), **fields}
        with self._tx() as tx:
            tx.execute(files.insert().values(**row))
        return self.file(tenant, row["id"]) or row

    def file(self, tenant: str | None, file_id: str) -> dict[str, Any] | None:
        """A file row, when it exists and (tenant given) belongs to ``tenant``."""
        return self._row(files, tenant, file_id)

    def files_of(self, tenant: str, purpose: str | None = None) -> list[dict[str, Any]]:
        """A tenant's files, newest first."""
        query = files.select().where(files.c.tenant == tenant).order_by(files.c.seq.desc())
        if purpose:
            query = query.where(files.c.purpose == purpose)
        with self.engine.connect() as connection:
            return [dict(row) for row in connection.execute(query).mappings()]

    def stored_bytes(self, tenant: str) -> int:
        """Bytes of the uploads a tenant keeps (result files do not count)."""
        query = sa.select(sa.func.coalesce(sa.func.sum(files.c.bytes), 0)).where(
            files.c.tenant == tenant, files.c.purpose != "fine-tune-results"
        )
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar() or 0)

    def set_file_path(self, file_id: str, path: str) -> None:
        with self._tx() as tx:
            tx.execute(files.update().where(files.c.id == file_id).values(path=path))

    def delete_file(self, tenant: str, file_id: str) -> dict[str, Any] | None:
        """Forget a tenant's file; returns its row (None when there was none)."""
        with self._tx() as tx:
            row = (
                tx.execute(files.select().where(files.c.id == file_id, files.c.tenant == tenant))
                .mappings()
                .first()
            )
            if row is not None:
                tx.execute(files.delete().where(files.c.id == file_id))
        return dict(row) if row else None

    # -- jobs ----------------------------------------------------------------------------

    def create_job(self, tenant: str, spec: dict[str, Any]) -> dict[str, Any]:
        """A new job in ``validating_files``; ``spec`` is the resolved create request."""
        row = {
            "id": new_id("ftjob"),
            "tenant": tenant,
            "created_at": int(time.time()),
            "status": "validating_files",
            "spec": json.dumps(spec),
            "result_files": "[]",
            "cancel_requested": False,
            "attempts": 0,
        }
        with self._tx() as tx:
            tx.execute(jobs.insert().values(**row))
        self.add_event(row["id"], "Validating training file: " + spec["training_file"])
        return self.job(None, row["id"]) or row

    def job(self, tenant: str | None, job_id: str) -> dict[str, Any] | None:
        """A job row (JSON columns decoded), when it exists and (tenant given) is the tenant's."""
        return self._row(jobs, tenant, job_id)

    def _row(self, table: sa.Table, tenant: str | None, row_id: str) -> dict[str, Any] | None:
        query = table.select().where(table.c.id == row_id)
        if tenant is not None:
            query = query.where(table.c.tenant == tenant)
        with self.engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return _decoded(row) if row else None

    def jobs_of(self, tenant: str, after: str | None, limit: int) -> tuple[list[dict], bool]:
        """A page of a tenant's jobs, newest first, after job ``after``; and whether more."""
        query = jobs.select().where(jobs.c.tenant == tenant)
        if after:
            cursor = self.job(tenant, after)
            if cursor is None:
                raise KeyError(after)
            query = query.where(jobs.c.seq < cursor["seq"])
        query = query.order_by(jobs.c.seq.desc()).limit(limit + 1)
        with self.engine.connect() as connection:
            rows = [_decoded(row) for row in connection.execute(query).mappings()]
        return rows[:limit], len(rows) > limit

    def active_jobs(self, tenant: str) -> int:
        """A tenant's jobs that are validating, queued or running."""
        query = sa.select(sa.func.count()).where(jobs.c.tenant == tenant, jobs.c.status.in_(ACTIVE))
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar() or 0)

    def update_job(self, job_id: str, *, expect: str | None = None, **fields: Any) -> bool:
        """Change a job's columns (JSON ones given as objects); only while in ``expect``."""
        query = jobs.update().where(jobs.c.id == job_id).values(**_encoded(fields))
        if expect is not None:
            query = query.where(jobs.c.status == expect)
        with self._tx() as tx:
            return tx.execute(query).rowcount == 1

    def finish(self, job_id: str, status: str, **fields: Any) -> bool:
        """End a running or validating job: ``succeeded``, ``failed`` or ``cancelled``."""
        values = {"status": status, "finished_at": int(time.time()), "worker": None, **fields}
        query = (
            jobs.update()
            .where(jobs.c.id == job_id, jobs.c.status.in_(ACTIVE))
            .values(**_encoded(values))
        )
        with self._tx() as tx:
            return tx.execute(query).rowcount == 1

    def request_cancel(self, tenant: str, job_id: str) -> dict[str, Any] | None:
        """Ask a job to stop: a job no worker holds is cancelled at once, a running one is
        stopped by its worker (after a checkpoint). Returns the job, None when unknown."""
        job = self.job(tenant, job_id)
        if job is None or job["status"] in FINAL:
            return job
        with self._tx() as tx:
            tx.execute(jobs.update().where(jobs.c.id == job_id).values(cancel_requested=True))
            tx.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.worker.is_(None), jobs.c.status.in_(ACTIVE))
                .values(status="cancelled", finished_at=int(time.time()))
            )
        job = self.job(tenant, job_id)
        if job is not None and job["status"] == "cancelled":
            self.add_event(job_id, "Job cancelled before it started")
        return job

    def claim(self, worker: str, max_running_per_tenant: int) -> dict[str, Any] | None:
        """The oldest job waiting for work, now held by ``worker``; None when there is none.

        A tenant already running ``max_running_per_tenant`` jobs waits its turn.
        """
        waiting = (
            sa.select(jobs.c.id, jobs.c.status, jobs.c.tenant)
            .where(jobs.c.status.in_(("validating_files", "queued")), jobs.c.worker.is_(None))
            .order_by(jobs.c.seq)
            .limit(50)
        )
        busy = (
            sa.select(jobs.c.tenant, sa.func.count())
            .where(jobs.c.status == "running")
            .group_by(jobs.c.tenant)
        )
        with self.engine.connect() as connection:
            candidates = connection.execute(waiting).all()
            running = dict(connection.execute(busy).all())
        for job_id, status, tenant in candidates:
            if status == "queued" and running.get(tenant, 0) >= max_running_per_tenant:
                continue
            claimed = jobs.update().where(
                jobs.c.id == job_id, jobs.c.status == status, jobs.c.worker.is_(None)
            )
            with self._tx() as tx:
                won = tx.execute(claimed.values(worker=worker, heartbeat=time.time())).rowcount
            if won == 1:
                return self.job(None, job_id)
        return None

    def release(self, job_id: str, worker: str) -> None:
        """Give a held job back to the queue (its worker is stopping; it resumes later)."""
        with self._tx() as tx:
            tx.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.worker == worker)
                .values(
                    worker=None,
                    process=None,
                    status=sa.case((jobs.c.status == "running", "queued"), else_=jobs.c.status),
                )
            )

    def beat(self, job_id: str, worker: str) -> dict[str, Any] | None:
        """Record that ``worker`` still runs the job; returns the job (None if it lost it)."""
        with self._tx() as tx:
            held = tx.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.worker == worker)
                .values(heartbeat=time.time())
            ).rowcount
        return self.job(None, job_id) if held else None

    def recover(self, stale_after_s: float, alive: Any = None) -> list[str]:
        """Queue again the held jobs whose worker stopped checking in.

        Args:
            stale_after_s: Seconds without a heartbeat after which a worker counts as gone.
            alive: ``alive("host:pid...") -> bool | None``: True or False for a process of
                this machine, None for one elsewhere. A job whose worker is known dead, or
                silent for ``stale_after_s``, is freed, unless its training process still
                runs here (it is saving a checkpoint).

        Returns:
            The ids of the jobs queued again.
        """
        query = sa.select(jobs.c.id, jobs.c.worker, jobs.c.process, jobs.c.heartbeat).where(
            jobs.c.worker.is_not(None), jobs.c.status.in_(ACTIVE)
        )
        with self.engine.connect() as connection:
            held = connection.execute(query).all()
        now, freed = time.time(), []
        for job_id, worker, process, heartbeat in held:
            check = alive or (lambda _: None)
            if process and check(process) is True:
                continue  # its training process still runs here (saving a checkpoint)
            if check(worker) is False or (heartbeat or 0) < now - stale_after_s:
                self.release(job_id, worker)
                self.add_event(job_id, "Job queued again: its worker stopped", level="warn")
                freed.append(job_id)
        return freed

    # -- events and checkpoints ----------------------------------------------------------

    def add_event(
        self,
        job_id: str,
        message: str,
        *,
        level: str = "info",
        kind: str = "message",
        data: dict[str, Any] | None = None,
    ) -> None:
        """Append an event to a job's log."""
        row = {
            "id": new_id("ftevent"),
            "job_id": job_id,
            "created_at": int(time.time()),
            "level": level,
            "type": kind,
            "message": message,
            "data": json.dumps(data) if data is not None else None,
        }
        with self._tx() as tx:
            tx.execute(events.insert().values(**row))

    def events_of(self, job_id: str, after: str | None, limit: int) -> tuple[list[dict], bool]:
        """A page of a job's events, newest first, older than event ``after``."""
        return self._page(events, job_id, after, limit)

    def add_checkpoint(self, job_id: str, step: int, metrics: dict[str, Any]) -> bool:
        """Record a checkpoint at ``step`` (once per step); True when it is new."""
        row = {
            "id": new_id("ftckpt"),
            "job_id": job_id,
            "created_at": int(time.time()),
            "step": step,
            "metrics": json.dumps(metrics),
        }
        try:
            with self._tx() as tx:
                tx.execute(checkpoints.insert().values(**row))
        except sa.exc.IntegrityError:
            return False
        return True

    def checkpoints_of(self, job_id: str, after: str | None, limit: int) -> tuple[list[dict], bool]:
        """A page of a job's checkpoints, newest first, older than checkpoint ``after``."""
        return self._page(checkpoints, job_id, after, limit)

    def _page(
        self, table: sa.Table, job_id: str, after: str | None, limit: int
    ) -> tuple[list[dict], bool]:
        query = table.select().where(table.c.job_id == job_id)
        with self.engine.connect() as connection:
            if after:
                seq = connection.execute(
                    sa.select(table.c.seq).where(table.c.id == after, table.c.job_id == job_id)
                ).scalar()
                if seq is None:
                    raise KeyError(after)
                query = query.where(table.c.seq < seq)
            query = query.order_by(table.c.seq.desc()).limit(limit + 1)
            rows = [_decoded(row) for row in connection.execute(query).mappings()]
        return rows[:limit], len(rows) > limit


def _encoded(values: dict[str, Any]) -> dict[str, Any]:
    """Job columns to write: the JSON ones (error, result_files) as text."""
    return {k: json.dumps(v) if k in ("error", "result_files") else v for k, v in values.items()}


def _decoded(row: Any) -> dict[str, Any]:
    out = dict(row)
    for key in ("spec", "error", "result_files", "data", "metrics"):
        if isinstance(out.get(key), str):
            out[key] = json.loads(out[key])
    return out
