"""The throwaway PostgreSQL server the shared-queue tests run on (test_service_store.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from postgres_support import postgres_server

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def engine() -> Iterator[sa.Engine]:
    with postgres_server() as url:
        # A claim that waits on a lock fails in seconds instead of hanging the suite.
        engine = sa.create_engine(url, connect_args={"options": "-c lock_timeout=5s"})
        yield engine
        engine.dispose()


def test_the_server_is_a_real_postgresql_with_the_tuneforge_database(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT current_database()")).scalar() == "tuneforge"
        assert int(conn.execute(sa.text("SHOW server_version_num")).scalar()) >= 120000
    assert engine.url.drivername == "postgresql+psycopg" and engine.url.host == "127.0.0.1"


def test_leaving_the_block_stops_the_server_and_removes_its_files() -> None:
    with postgres_server() as url:
        port = urlsplit(url).port
        assert port is not None
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            data = Path(conn.execute(sa.text("SHOW data_directory")).scalar())
        engine.dispose()
        assert (data / "PG_VERSION").exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert not data.parent.exists()
