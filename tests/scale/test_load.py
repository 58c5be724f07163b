"""Hundreds of players playing whole sessions against `gap serve --workers 2`, and a worker SIGKILLed.

On SQLite and (CI's second pass) PostgreSQL. The model is a real OpenAI-compatible server on
127.0.0.1 (``ScaleBackend``) answering at once, so the load is the game's own work.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from pathlib import Path

import httpx
import pytest

from fixtures.game import seed_images
from fixtures.load import Load, assert_stored, gap_serve, run_players, serve_env, wait_until
from fixtures.scale_backend import ScaleBackend
from gap.config import Settings

pytestmark = [pytest.mark.db, pytest.mark.slow]

PLAYERS = 200
CONCURRENCY = 40
KILLED_PLAYERS = 100


def test_hundreds_of_players_on_two_workers(
    settings: Settings, scale_backend: ScaleBackend, tmp_path: Path
) -> None:
    seed_images(settings, per_pool=4)
    env = serve_env(settings.resolved_database_url, settings.data_dir, scale_backend.base_url)
    with gap_serve(2, env, tmp_path / "serve.log") as served:
        load = asyncio.run(run_players(served.url, PLAYERS, concurrency=CONCURRENCY, budget_s=150))
    assert load.server_errors == []
    assert load.transport_errors == 0, load.transport_messages
    assert len(load.finished) == PLAYERS
    assert len(load.verdicts) >= PLAYERS * 2  # each of the 2 pictures ends on a verdict at least
    assert any(correction for _, correction in load.verdicts.values())
    assert_stored(settings.resolved_database_url, load)


def test_a_worker_killed_mid_load_loses_nothing_and_blocks_no_round(
    settings: Settings, scale_backend: ScaleBackend, tmp_path: Path
) -> None:
    seed_images(settings, per_pool=4)
    env = serve_env(
        settings.resolved_database_url,
        settings.data_dir,
        scale_backend.base_url,
        GAP_MODEL_TIMEOUT="2",  # a question lost with its process stops blocking its round 12 s later
    )
    load, killed, failures = Load(), [], []
    with gap_serve(2, env, tmp_path / "serve.log") as served:
        workers = served.workers()

        def kill_mid_load() -> None:
            # once play is under way, hold questions at the model so some are pending on each worker
            try:
                assert wait_until(lambda: len(load.verdicts) >= 100, 60), "play did not get going"
                scale_backend.mode = "hang"
                scale_backend.wait_held(8, timeout=60)
                killed.append(served.busiest_worker())
                os.kill(killed[0], signal.SIGKILL)
            except BaseException as exc:  # told to the test below
                failures.append(exc)
            finally:
                scale_backend.mode = "ok"
                scale_backend.release.set()

        killer = threading.Thread(target=kill_mid_load)
        killer.start()
        asyncio.run(run_players(served.url, KILLED_PLAYERS, concurrency=30, budget_s=80, load=load))
        killer.join()
        assert failures == []
        (survivor,) = set(workers) - set(killed)
        assert served.process.poll() is None and survivor in served.workers()  # it kept serving
        assert httpx.get(f"{served.url}/healthz").status_code == 200
    assert load.server_errors == []
    assert load.transport_errors > 0  # the killed worker's connections dropped under its players
    assert load.statuses[409] > 0  # a question lost with the worker held its round for a while...
    assert len(load.finished) == KILLED_PLAYERS  # ...and no longer: every session was played to its end
    assert_stored(settings.resolved_database_url, load)
