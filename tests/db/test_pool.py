"""PostgreSQL's pool: connections the server dropped while idle are replaced before use."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, text

from fixtures.db import POSTGRES_ADMIN_URL
from gap.db import engine as engine_module
from gap.db.engine import make_engine

pytestmark = [
    pytest.mark.db,
    pytest.mark.skipif(
        not POSTGRES_ADMIN_URL, reason="needs a server that drops connections: CI's PostgreSQL phase"
    ),
]


def test_a_connection_dropped_while_idle_is_replaced(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(database_url)
    with engine.connect() as conn:
        dropped = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT", poolclass=None)
    with admin.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": dropped}).scalar_one()
        ends = time.monotonic() + 30
        while conn.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": dropped}
        ).scalar_one():
            assert time.monotonic() < ends, "the backend did not exit"
            time.sleep(0.05)  # polling the server's own state until the backend has gone
    admin.dispose()
    monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_S", 0.0)  # the pooled connection counts as idle
    with engine.connect() as conn:
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != dropped
    engine.dispose()


def test_only_idle_connections_are_pinged(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(database_url)
    pings: list[object] = []
    ping = engine.dialect.do_ping
    monkeypatch.setattr(
        engine.dialect, "do_ping", lambda dbapi_connection: pings.append(1) or ping(dbapi_connection)
    )

    def use() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1")).scalar_one()

    for _ in range(5):
        use()  # the same connection, back in the pool moments ago: SQLAlchemy's pre-ping pinged each
    assert pings == []
    monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_S", 0.0)
    use()
    engine.dispose()
    assert pings == [1]
