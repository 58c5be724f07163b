"""The model backend hangs mid-load under `gap serve --workers 2`: only questions wait, then fail fast.

Other routes stay fast (``/api/me`` answers in well under a second while questions are held, where
a shared thread pool made it wait for the model's time-out), questions get
504 (time-out) then 503 (circuit open) with a JSON message, the circuit closes once the backend
answers again, no acknowledged verdict is lost and the round's clock is not charged.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import httpx
import pytest

from fixtures.game import seed_images
from fixtures.load import (
    Load,
    assert_stored,
    gap_serve,
    percentile,
    run_players,
    sample_while_questions_wait,
    serve_env,
    wait_until,
)
from fixtures.scale_backend import ScaleBackend
from gap.config import Settings

pytestmark = [pytest.mark.db, pytest.mark.slow]

PLAYERS = 80
TIMEOUT_S = 6.0
SAMPLES = 200
MIN_SAMPLES = 20
ME_BOUND_S = TIMEOUT_S / 6  # far below the time-out a starved route waits, far above a busy machine's p99


def test_a_hung_backend_mid_load(settings: Settings, scale_backend: ScaleBackend, tmp_path: Path) -> None:
    seed_images(settings, per_pool=4)
    env = serve_env(
        settings.resolved_database_url,
        settings.data_dir,
        scale_backend.base_url,
        GAP_MODEL_TIMEOUT=str(TIMEOUT_S),
        GAP_MODEL_BREAKER_FAILURES="3",
        GAP_MODEL_BREAKER_RESET="2",
    )
    load, failures = Load(), []
    me_seconds: list[float] = []
    with gap_serve(2, env, tmp_path / "serve.log") as served:
        with httpx.Client(base_url=served.url, timeout=30) as http:
            token = http.post("/api/auth/guest", json={"name": "watcher"}).json()["token"]

        def hang_then_recover() -> None:
            try:
                assert wait_until(lambda: len(load.verdicts) >= 50, 60), "play did not get going"
                scale_backend.mode = "hang"
                scale_backend.wait_held(3, timeout=60)  # questions wait; the breaker opens after 3 fail
                # sample only while no question has timed out yet: every sample is taken while
                # questions are held (a state, so a slow machine takes fewer samples, not wrong ones)
                with httpx.Client(base_url=served.url, timeout=30) as watcher:
                    me_seconds.extend(sample_while_questions_wait(watcher, token, SAMPLES, load))
                seen_both = wait_until(lambda: load.statuses[504] > 0 and load.statuses[503] > 0, 60)
                assert seen_both, load.statuses
            except BaseException as exc:  # told to the test below
                failures.append(exc)
            finally:
                scale_backend.mode = "ok"
                scale_backend.release.set()

        controller = threading.Thread(target=hang_then_recover)
        controller.start()
        asyncio.run(run_players(served.url, PLAYERS, concurrency=30, budget_s=80, watch_clock=30, load=load))
        controller.join()
    assert failures == []

    # the rest of the server did not wait for the model
    assert len(me_seconds) >= MIN_SAMPLES, f"/api/me answered {len(me_seconds)} times before a time-out"
    p99 = percentile(me_seconds, 0.99)
    print(f"/api/me while questions were held: {len(me_seconds)} samples, p99 {p99 * 1000:.0f} ms")
    assert p99 < ME_BOUND_S, f"/api/me p99 {p99 * 1000:.0f} ms while questions waited"

    # questions failed with a JSON message: 504 past the time-out, then 503 at once, circuit open
    assert {status for status, *_ in load.server_errors} == {503, 504}
    for status, _, body, retry_after in load.server_errors:
        assert json.loads(body)["detail"]
        assert status == 504 or retry_after is not None
    # the circuit closed once the backend answered: questions answered after the last 503
    last_refused = max(at for at, status in load.events if status == 503)
    assert any(status == 201 and at > last_refused for at, status in load.events)

    # the round's clock was not charged for the model's time
    timed_out = [(lost, waited) for status, lost, waited in load.clock_checks if status == 504]
    assert timed_out, "no watched player met a time-out"
    for lost, waited in timed_out:
        assert waited >= TIMEOUT_S
        # the model's seconds were given back: without it the clock loses all of them
        assert lost < waited - TIMEOUT_S / 2, (lost, waited)

    assert len(load.finished) == PLAYERS
    assert_stored(settings.resolved_database_url, load)
