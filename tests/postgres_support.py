"""A throwaway PostgreSQL server on a loopback port, for the shared-queue tests."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

SKIP_REASON = "PostgreSQL is not installed (scripts/install-postgres.sh)"


def find_bin_dir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: PATH first, then Debian's newest."""
    on_path = shutil.which("initdb"), shutil.which("pg_ctl")
    if all(on_path):
        return Path(on_path[0]).resolve().parent
    # Debian keeps the server binaries off PATH, one directory per major version.
    candidates = [d for d in Path("/usr/lib/postgresql").glob("*/bin") if (d / "initdb").exists()]
    candidates.sort(key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else -1)
    return candidates[-1] if candidates and (candidates[-1] / "pg_ctl").exists() else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Run a fresh PostgreSQL cluster with a ``tuneforge`` database for the block.

    The cluster lives in a temporary directory, trusts local connections and skips fsync,
    so it starts in a second or two and leaves nothing behind. PostgreSQL refuses to run as
    root, so under root the server commands run as the ``postgres`` system user.

    Yields:
        The SQLAlchemy URL of the ``tuneforge`` database, as user ``postgres``.

    Raises:
        RuntimeError: the server did not start (the message carries its log).
    """
    import psycopg

    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip(SKIP_REASON)
    bins: Path = bin_dir
    prefix: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
        prefix = ["runuser", "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="tuneforge-pg-"))
    data, sockets, log = base / "data", base / "sockets", base / "server.log"
    sockets.mkdir()
    if owner is not None:
        for path in (base, sockets):
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def pg(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        # cwd=base: the postgres user may not be able to enter the caller's directory.
        command = [*prefix, str(bins / tool), "-D", str(data), *args]
        return subprocess.run(command, cwd=base, capture_output=True, text=True, check=False)

    port = free_port()
    try:
        init = pg("initdb", "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        if init.returncode:
            raise RuntimeError(f"initdb failed:\n{init.stdout}{init.stderr}")
        options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        # -l: the server must not inherit our pipes, or capturing pg_ctl's output never ends.
        start = pg("pg_ctl", "-l", str(log), "-o", options, "-w", "start")
        if start.returncode:
            server_log = log.read_text() if log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start:\n{start.stderr}{server_log}")
        dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE DATABASE tuneforge")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/tuneforge"
    finally:
        if (data / "postmaster.pid").exists():
            pg("pg_ctl", "-m", "fast", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)
