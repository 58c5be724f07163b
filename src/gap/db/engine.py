"""Engines and sessions: SQLite tuned for concurrent players, PostgreSQL through psycopg 3."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

READ_ONLY = "gap_read_only"
POOL_SIZE = 40
"""Connections each engine keeps open (and as many again in overflow): as many as the 40 request
threads and the model gate's threads that may each hold one. A smaller pool closed the connections
past it at every check-in and opened new ones (hundreds a minute under load)."""
_POOL: dict[str, Any] = {"pool_size": POOL_SIZE, "max_overflow": POOL_SIZE, "pool_use_lifo": True}
PING_AFTER_IDLE_S = 10.0
"""A pooled connection idle this long is pinged before use, so one the server dropped (a restart, a
proxy's idle time-out) is replaced instead of failing a request; busy connections are not."""

_SQLITE_WRITERS: weakref.WeakKeyDictionary[Engine, threading.RLock] = weakref.WeakKeyDictionary()
"""One lock per SQLite engine that its write transactions take in turn (see :func:`transaction`)."""


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout so writers queue."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = create_engine(url, **_POOL)
        _ping_when_idle(engine)
        return engine
    in_file = bool(parsed.database) and parsed.database != ":memory:"
    if in_file:
        Path(str(parsed.database)).parent.mkdir(parents=True, exist_ok=True)
    pool = _POOL if in_file else {}  # SQLite's in-memory pools take no size
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **pool)
    _SQLITE_WRITERS[engine] = threading.RLock()

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin (BEGIN IMMEDIATE below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL syncs at checkpoints, not on every commit: a killed process loses no
        # committed transaction (the WAL is in the OS's cache), a power cut may lose the last few.
        # FULL cost one fsync per commit, most of a verdict's time. Production durability: PostgreSQL.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # Writers take the lock up front, so read-then-write transactions never deadlock on upgrade;
        # read-only units of work begin a plain (deferred) transaction and never wait for writers.
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")

    return engine


def _ping_when_idle(engine: Engine) -> None:
    """SQLAlchemy's ``pool_pre_ping``, for connections idle past :data:`PING_AFTER_IDLE_S` only.

    The built-in pings on every checkout: a round trip more for each of a question's and a verdict's
    three transactions. (Measured together with the larger pool, ask + verdict went from 231-239 to
    273 requests/s at 200 clients on PostgreSQL; the larger pool with the built-in ping gave 260-309
    in two runs, so the ping's own share is within this machine's noise.) The pool hands out its
    most recently used connection first (LIFO), so under load none is idle that long.
    """

    @event.listens_for(engine, "checkin")
    def _idle_since(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the driver's own error: the connection is gone
            raise DisconnectionError("a pooled connection was closed by the server") from exc


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error.

    On SQLite the process's writers take turns on a lock before ``BEGIN IMMEDIATE``: SQLite's own
    busy handler polls with sleeps of up to 100 ms, so at 20 clients the waiting threads slept past
    each other's commits (p99 of seconds); a lock hands over at once. Other processes (``gap
    worker``) still queue through the busy timeout.
    """
    bind = factory.kw.get("bind")
    writers = _SQLITE_WRITERS.get(bind) if isinstance(bind, Engine) else None
    with writers if writers is not None else nullcontext(), factory() as session, session.begin():
        yield session


@contextmanager
def reading(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A unit of work that only reads: on SQLite it does not queue behind writers."""
    with factory() as session, session.begin():
        session.connection(execution_options={READ_ONLY: True})
        yield session
