"""Abuse refused: sign-ups and admin logins per IP, questions per player; 429 with Retry-After.

On the old main 1,000 guest sign-ups from one IP were all accepted and one player could call the
model as fast as the server answered.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fixtures.game import login, seed_images
from gap.config import Settings
from gap.errors import ConfigError
from gap.models.base import ChatMessage, ImageInput
from gap.web.app import create_app

pytestmark = pytest.mark.db


class Yes:
    name = "yes"

    def answer(self, image: ImageInput, messages: list[ChatMessage], system: str | None = None) -> str:
        return "yes"


@pytest.fixture
def client(settings: Settings) -> Any:
    seed_images(settings, per_pool=2)
    limited = settings.model_copy(
        update={
            "rate_signups": "3/minute",
            "rate_questions": "2/minute",
            "rate_admin_login": "2/minute",
            "admin_token": "s3cret",
        }
    )
    with TestClient(create_app(limited, model=Yes(), rng=random.Random(1))) as client:
        yield client


def assert_429(response: Any) -> None:
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert "too many requests" in response.json()["detail"]


def test_sign_ups_per_ip(client: TestClient) -> None:
    statuses = [client.post("/api/auth/guest", json={"name": f"p{i}"}).status_code for i in range(3)]
    assert statuses == [200] * 3
    assert_429(client.post("/api/auth/guest", json={"name": "p4"}))
    assert_429(client.post("/api/auth/telegram", json={"init_data": "x"}))  # the same budget


def test_questions_per_player(client: TestClient) -> None:
    ada, bob = login(client, "Ada"), login(client, "Bob")
    round_id = client.post("/api/sessions", headers=ada).json()["round"]["round_id"]
    for _ in range(2):
        asked = client.post(f"/api/rounds/{round_id}/questions", headers=ada, json={"question": "Q?"})
        assert asked.status_code == 201
        judged = client.post(
            f"/api/turns/{asked.json()['turn_id']}/verdict", headers=ada, json={"verdict": "correct"}
        )
        assert judged.status_code == 200
    assert_429(client.post(f"/api/rounds/{round_id}/questions", headers=ada, json={"question": "Q?"}))
    assert client.get("/api/me", headers=ada).status_code == 200  # only questions are limited
    bob_round = client.post("/api/sessions", headers=bob).json()["round"]["round_id"]
    assert (
        client.post(f"/api/rounds/{bob_round}/questions", headers=bob, json={"question": "Q?"}).status_code
        == 201
    )


def test_admin_login_attempts_per_ip(client: TestClient) -> None:
    assert client.post("/admin/login", json={"token": "guess"}).status_code == 401
    assert client.post("/admin/login", json={"token": "guess2"}).status_code == 401
    assert_429(client.post("/admin/login", json={"token": "s3cret"}))  # even the right one, for now


def test_bad_rates_and_redis_urls_are_config_errors(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="GAP_RATE_QUESTIONS"):
        create_app(settings.model_copy(update={"rate_questions": "lots"}), model=Yes())
    with pytest.raises(ConfigError, match="GAP_REDIS_URL"):
        create_app(settings.model_copy(update={"redis_url": "http://cache:6379"}), model=Yes())


def test_two_replicas_share_the_limits_through_redis(settings: Settings, redis_url: str) -> None:
    shared = settings.model_copy(update={"rate_signups": "3/minute", "redis_url": redis_url})
    with (
        TestClient(create_app(shared, model=Yes())) as one,
        TestClient(create_app(shared, model=Yes())) as two,
    ):
        statuses = [c.post("/api/auth/guest", json={"name": "p"}).status_code for c in (one, two, one)]
        assert statuses == [200, 200, 200]
        assert_429(two.post("/api/auth/guest", json={"name": "p"}))
        assert_429(one.post("/api/auth/guest", json={"name": "p"}))


def test_in_process_limits_count_across_event_loops_and_threads() -> None:
    """A test client (or any embedder) may serve requests on several event loops at once: the
    in-process counts must stay exact and never fail a request for the loop it runs on."""
    import asyncio
    import threading

    import limits

    from gap.web.ratelimit import make_limiter

    limiter = make_limiter(None)
    item = limits.parse("150/minute")
    outcomes: list[bool] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def player() -> None:
        async def hits() -> list[bool]:
            return [await limiter.hit(item, "questions", "one-player") for _ in range(50)]

        start.wait()
        try:
            outcomes.extend(asyncio.run(hits()))  # each thread its own event loop
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=player) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert outcomes.count(True) == 150 and outcomes.count(False) == 50
