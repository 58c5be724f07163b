"""The SQLite engine: writers queue, readers never wait for them."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import text

from gap.db.engine import make_engine, make_sessionmaker, reading, transaction
from gap.db.migrate import is_current, upgrade


def test_readers_do_not_wait_for_a_writer(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gap.sqlite3'}"
    upgrade(url)
    factory = make_sessionmaker(make_engine(url))
    finished: list[float] = []

    def read() -> None:
        start = time.monotonic()
        with reading(factory) as db:
            db.execute(text("SELECT count(*) FROM players")).scalar_one()
        finished.append(time.monotonic() - start)

    with transaction(factory) as writer:
        writer.execute(text("SELECT 1"))  # BEGIN IMMEDIATE: holds the write lock until the block ends
        reader = threading.Thread(target=read)
        reader.start()
        reader.join(timeout=5)
        assert finished and finished[0] < 2, "a read waited for the writer's lock"


def test_writers_queue_instead_of_failing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gap.sqlite3'}"
    upgrade(url)
    factory = make_sessionmaker(make_engine(url))
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            with transaction(factory) as db:
                count = db.execute(text("SELECT count(*) FROM players")).scalar_one()
                db.execute(
                    text(
                        "INSERT INTO players (id, name, token_hash, created_at) "
                        "VALUES (:i, :n, :h, '2026-01-01')"
                    ),
                    {"i": f"p{i}", "n": f"n{count}", "h": f"h{i}"},
                )
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with reading(factory) as db:
        names = set(db.execute(text("SELECT name FROM players")).scalars())
    assert names == {f"n{i}" for i in range(16)}  # each read-then-write saw all earlier writes


def test_fresh_database_is_not_current_until_upgraded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'gap.sqlite3'}"
    engine = make_engine(url)
    assert not is_current(engine)
    upgrade(url)
    assert is_current(engine)
