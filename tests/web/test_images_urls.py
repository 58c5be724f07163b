"""Round pictures live under per-round URLs that only the round's player can read (issue 9, point 4).

With one URL per image, players could pool what they learn about an image ("this one never pays")
across sessions; nothing a player receives may name the image across rounds: not the URL, not an
ETag, not a Last-Modified date.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from fixtures.game import ManualClock, login, seed_images
from gap.config import Settings
from gap.db.engine import make_engine, make_sessionmaker, transaction
from gap.db.models import Image, Player, Round
from gap.models.base import ChatMessage, ImageInput
from gap.services.players import hash_token
from gap.services.round_images import round_image_key

pytestmark = pytest.mark.db


class UnusedModel:
    """These tests only look at pictures; no question is asked."""

    name = "unused"

    def answer(self, image: ImageInput, messages: list[ChatMessage], system: str | None = None) -> str:
        raise AssertionError("no question is asked in these tests")


def play_by_timeouts(client: TestClient, auth: dict[str, str], clock: ManualClock) -> dict[str, str]:
    """Let every round of a new session run out; returns round id -> the image URL it showed."""
    session_id = client.post("/api/sessions", headers=auth).json()["session_id"]
    urls: dict[str, str] = {}
    while (state := client.get(f"/api/sessions/{session_id}", headers=auth).json())["status"] == "active":
        urls[state["round"]["round_id"]] = state["round"]["image_url"]
        clock.advance(121)
    return urls


def images_of(settings: Settings, round_ids: list[str]) -> dict[str, str]:
    """Round id -> image id, from the database."""
    engine = make_engine(settings.resolved_database_url)
    with transaction(make_sessionmaker(engine)) as db:
        rows = db.execute(select(Round.id, Round.image_id).where(Round.id.in_(round_ids))).all()
    engine.dispose()
    return {round_id: image_id for round_id, image_id in rows}


@pytest.fixture
def game(
    settings: Settings, make_client: Callable[..., TestClient], clock: ManualClock
) -> tuple[TestClient, ManualClock]:
    seed_images(settings)  # 12 images, 10 a session: two sessions share at least 8
    return make_client(UnusedModel(), rng=random.Random(3)), clock


def test_the_same_image_gets_unrelated_urls_and_headers_in_each_round(
    settings: Settings, game: tuple[TestClient, ManualClock]
) -> None:
    client, clock = game
    ada, bob = login(client, "Ada"), login(client, "Bob")
    plays = {
        "ada-1": play_by_timeouts(client, ada, clock),
        "ada-2": play_by_timeouts(client, ada, clock),
        "bob-1": play_by_timeouts(client, bob, clock),
    }
    auth = {"ada-1": ada, "ada-2": ada, "bob-1": bob}
    image_of = images_of(settings, [r for urls in plays.values() for r in urls])
    by_image: dict[str, list[tuple[str, str]]] = {}
    for play, urls in plays.items():
        for round_id, url in urls.items():
            by_image.setdefault(image_of[round_id], []).append((play, url))
    shared = {image: shown for image, shown in by_image.items() if len(shown) >= 2}
    assert len(shared) >= 8

    engine = make_engine(settings.resolved_database_url)
    with transaction(make_sessionmaker(engine)) as db:
        files = {image.id: image for image in db.scalars(select(Image))}
    engine.dispose()
    for image_id, shown in shared.items():
        shown_urls = [url for _, url in shown]
        assert len(set(shown_urls)) == len(shown_urls), "one URL served in two rounds"
        assert not any(image_id in url or files[image_id].sha256[:12] in url for url in shown_urls)
        responses = [client.get(url, headers=auth[play]) for play, url in shown]
        assert all(r.status_code == 200 for r in responses)
        assert len({hashlib.sha256(r.content).hexdigest() for r in responses}) == 1  # the same picture
        etags = [r.headers.get("etag") for r in responses]
        assert all(tag is None for tag in etags) or len(set(etags)) == len(etags)
        for response in responses:
            assert "last-modified" not in response.headers
            cache = response.headers["cache-control"]
            assert cache.startswith("private") and "public" not in cache
            assert files[image_id].sha256 not in " ".join(response.headers.values())


def test_only_the_rounds_player_can_fetch_its_picture(
    settings: Settings, game: tuple[TestClient, ManualClock]
) -> None:
    client, _ = game
    ada = login(client, "Ada")
    started = client.post("/api/sessions", headers=ada).json()
    url = started["round"]["image_url"]
    round_id = started["round"]["round_id"]
    path, _, key = url.partition("?key=")
    assert client.get(url).status_code == 200  # an <img src> sends no bearer header: the key is enough

    eve_token = client.post("/api/auth/guest", json={"name": "Eve"}).json()["token"]
    eve = {"Authorization": f"Bearer {eve_token}"}
    eve_round = client.post("/api/sessions", headers=eve).json()["round"]
    eve_key = eve_round["image_url"].partition("?key=")[2]
    # Eve knows the round id (say, from a shared screenshot of the address): without Ada's key, nothing
    for forged in (
        "",
        "0" * 32,
        key[:-1],
        key.upper(),
        eve_key,
        round_image_key(round_id, hash_token(eve_token)),
    ):
        response = client.get(f"{path}?key={forged}", headers=eve)
        assert response.status_code in (404, 422), (forged, response.status_code)
        assert not response.headers.get("content-type", "").startswith("image/")
    assert client.get(path, headers=eve).status_code == 422  # no key at all
    # nor does Ada's key open Eve's round
    assert client.get(eve_round["image_url"].partition("?")[0] + f"?key={key}").status_code == 404

    # a new login (a new token) retires the old keys: the page gets fresh URLs from the session view
    engine = make_engine(settings.resolved_database_url)
    with transaction(make_sessionmaker(engine)) as db:
        player = db.scalars(select(Player).where(Player.name == "Ada")).one()
        player.token_hash = hash_token("a-new-token")
    engine.dispose()
    assert client.get(url).status_code == 404
    fresh = client.get(
        f"/api/sessions/{started['session_id']}", headers={"Authorization": "Bearer a-new-token"}
    )
    assert fresh.json()["round"]["image_url"] != url
    assert client.get(fresh.json()["round"]["image_url"]).status_code == 200


def test_the_old_image_id_route_serves_nothing(
    settings: Settings, game: tuple[TestClient, ManualClock]
) -> None:
    client, _ = game
    ada = login(client, "Ada")
    started = client.post("/api/sessions", headers=ada).json()
    image_id = images_of(settings, [started["round"]["round_id"]])[started["round"]["round_id"]]
    anonymous: dict[str, str] = {}
    for headers in (anonymous, ada):
        response = client.get(f"/api/images/{image_id}", headers=headers)
        assert response.status_code == 404
        assert not response.headers.get("content-type", "").startswith("image/")
    schema = client.get("/openapi.json").json()
    assert "/api/images/{image_id}" not in schema["paths"]
    assert "/api/rounds/{round_id}/image" in schema["paths"]


def test_the_round_view_carries_no_image_id(settings: Settings, game: tuple[TestClient, ManualClock]) -> None:
    client, _ = game
    ada = login(client, "Ada")
    body = client.post("/api/sessions", headers=ada).text
    engine = make_engine(settings.resolved_database_url)
    with transaction(make_sessionmaker(engine)) as db:
        ids = list(db.scalars(select(Image.id)))
    engine.dispose()
    assert not [image_id for image_id in ids if image_id in body]
