"""A slow, hung or failing model backend delays only questions, opens a circuit, and costs no clock.

Against a real OpenAI-compatible HTTP server on 127.0.0.1 (``ScaleBackend``), through the real
``openai`` backend. On the old main every sync route shared one 40-thread pool, so 45 questions
held by a hung backend made ``/api/me`` wait for the model time-out.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from fixtures.game import ManualClock, login, seed_images
from fixtures.scale_backend import ScaleBackend
from fixtures.server import LiveServer
from gap.config import Settings
from gap.db.engine import make_engine, make_sessionmaker, transaction
from gap.db.models import Turn
from gap.models.gate import CircuitState
from gap.models.openai_backend import OpenAIModel
from gap.web.app import create_app

pytestmark = pytest.mark.db

HELD = 45  # more than the 40 threads every sync route shares


def backend_model(backend: ScaleBackend, timeout: float) -> OpenAIModel:
    return OpenAIModel("m", base_url=backend.base_url, api_key="EMPTY", timeout=timeout, max_new_tokens=8)


def rows(settings: Settings, model: type) -> list[Any]:
    engine = make_engine(settings.resolved_database_url)
    with transaction(make_sessionmaker(engine)) as db:
        found: list[Any] = list(db.query(model))
    engine.dispose()
    return found


def test_a_hung_backend_delays_only_questions(
    settings: Settings, scale_backend: ScaleBackend, live_server: Callable[..., LiveServer]
) -> None:
    seed_images(settings, per_pool=2)
    app = create_app(
        settings.model_copy(update={"model_timeout": 60.0, "model_concurrency": 64, "session_images": 2}),
        model=backend_model(scale_backend, 60.0),
        rng=random.Random(2),
    )
    server = live_server(app)
    scale_backend.mode = "hang"
    with httpx.Client(base_url=server.url, timeout=60) as http:
        players: list[tuple[dict[str, str], str]] = []
        for i in range(HELD):
            token = http.post("/api/auth/guest", json={"name": f"p{i}"}).json()["token"]
            auth = {"Authorization": f"Bearer {token}"}
            players.append((auth, http.post("/api/sessions", headers=auth).json()["round"]["round_id"]))

        def ask(player: tuple[dict[str, str], str]) -> int:
            auth, round_id = player
            response = http.post(f"/api/rounds/{round_id}/questions", headers=auth, json={"question": "Red?"})
            return response.status_code

        with ThreadPoolExecutor(HELD) as pool:
            asked = [pool.submit(ask, player) for player in players]
            scale_backend.wait_held(HELD)
            # every question is held by the backend now; the rest of the server still answers
            with httpx.Client(base_url=server.url, timeout=10) as other:
                for _ in range(20):
                    assert other.get("/api/me", headers=players[0][0]).status_code == 200
                assert other.get("/api/leaderboard").status_code == 200
                assert other.post("/api/auth/guest", json={"name": "late"}).status_code == 200
                assert other.get("/").status_code == 200
            assert not any(future.done() for future in asked)  # still held: the state did not change
            scale_backend.release.set()
            assert [future.result() for future in asked] == [201] * HELD
    assert len([t for t in rows(settings, Turn) if t.answer == "yes"]) == HELD  # nothing lost


@pytest.fixture
def breaker_client(
    settings: Settings, scale_backend: ScaleBackend, clock: ManualClock
) -> tuple[TestClient, list[float]]:
    seed_images(settings, per_pool=2)
    app = create_app(
        settings.model_copy(update={"model_breaker_failures": 3, "model_breaker_reset": 30.0}),
        model=backend_model(scale_backend, 10.0),
        clock=clock,
        rng=random.Random(4),
    )
    monotonic = [1000.0]
    app.state.context.gate.breaker.now = lambda: monotonic[0]
    return TestClient(app), monotonic


def test_the_circuit_opens_after_failures_and_closes_after_a_probe(
    breaker_client: tuple[TestClient, list[float]], scale_backend: ScaleBackend, settings: Settings
) -> None:
    client, monotonic = breaker_client
    breaker = client.app.state.context.gate.breaker  # type: ignore[attr-defined]
    auth = login(client)
    round_id = client.post("/api/sessions", headers=auth).json()["round"]["round_id"]
    url = f"/api/rounds/{round_id}/questions"
    scale_backend.mode = "fail"
    assert [client.post(url, headers=auth, json={"question": "Q?"}).status_code for _ in range(3)] == [
        502
    ] * 3
    assert breaker.state is CircuitState.OPEN
    sent = scale_backend.requests
    refused = client.post(url, headers=auth, json={"question": "Q?"})
    assert refused.status_code == 503
    assert "try again" in refused.json()["detail"]
    assert refused.headers["Retry-After"] == "30"
    assert scale_backend.requests == sent  # answered at once: the backend was not called
    assert rows(settings, Turn) == []  # failed questions leave no turn behind

    scale_backend.mode = "ok"
    monotonic[0] += 29.0
    assert client.post(url, headers=auth, json={"question": "Q?"}).status_code == 503
    monotonic[0] += 1.0
    probe = client.post(url, headers=auth, json={"question": "Q?"})
    assert probe.status_code == 201 and probe.json()["answer"] == "yes"
    assert breaker.state.value == "closed"
    judged = client.post(
        f"/api/turns/{probe.json()['turn_id']}/verdict", headers=auth, json={"verdict": "correct"}
    )
    assert judged.status_code == 200
    assert client.post(url, headers=auth, json={"question": "Again?"}).status_code == 201
    assert len(rows(settings, Turn)) == 2


def test_a_failed_probe_opens_the_circuit_again(
    breaker_client: tuple[TestClient, list[float]], scale_backend: ScaleBackend
) -> None:
    client, monotonic = breaker_client
    breaker = client.app.state.context.gate.breaker  # type: ignore[attr-defined]
    auth = login(client)
    round_id = client.post("/api/sessions", headers=auth).json()["round"]["round_id"]
    url = f"/api/rounds/{round_id}/questions"
    scale_backend.mode = "fail"
    for _ in range(3):
        client.post(url, headers=auth, json={"question": "Q?"})
    monotonic[0] += 30.0
    assert client.post(url, headers=auth, json={"question": "Q?"}).status_code == 502  # the probe
    assert breaker.state is CircuitState.OPEN
    assert client.post(url, headers=auth, json={"question": "Q?"}).status_code == 503


def test_the_round_clock_is_not_charged_for_the_models_time(
    settings: Settings,
    scale_backend: ScaleBackend,
    clock: ManualClock,
    live_server: Callable[..., LiveServer],
) -> None:
    seed_images(settings, per_pool=2)
    app = create_app(settings, model=backend_model(scale_backend, 60.0), clock=clock, rng=random.Random(6))
    server = live_server(app)
    with httpx.Client(base_url=server.url, timeout=60) as http:
        token = http.post("/api/auth/guest", json={"name": "Ada"}).json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        started = http.post("/api/sessions", headers=auth).json()
        session_id, round_id = started["session_id"], started["round"]["round_id"]
        assert started["round"]["seconds_left"] == 120
        clock.advance(10)  # the player thinks for 10 s
        scale_backend.mode = "hang"
        with ThreadPoolExecutor(1) as pool:
            asked = pool.submit(
                http.post, f"/api/rounds/{round_id}/questions", headers=auth, json={"question": "Red?"}
            )
            scale_backend.wait_held(1)
            clock.advance(45)  # the model takes 45 s to answer
            scale_backend.release.set()
            assert asked.result().status_code == 201
        # 120 - 10 s of thinking: the model's 45 s were given back
        assert http.get(f"/api/sessions/{session_id}", headers=auth).json()["round"]["seconds_left"] == 110
