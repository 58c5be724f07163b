"""A hint tells nothing about the round's pool: the model gets the same request for a tainted and an
untainted round, and the player the same reply around the hint's text.

Played through the real API against the OpenAI backend and a recording OpenAI-compatible server on
127.0.0.1, as the reference endpoint (`GAP_REFERENCE_*`) and, without one, as the game's own model.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from fixtures.game import assert_no_leak, header_shape, login, seed_images
from fixtures.recording_server import RecordingServer, last_user_text, recording_server
from gap.config import Settings
from gap.db.engine import make_engine, make_sessionmaker, transaction
from gap.db.models import Round
from gap.game import PLAIN_INSTRUCTION, SYSTEM_PROMPT, TAINT_INSTRUCTION
from gap.models.openai_backend import OpenAIModel
from gap.services.hints import HINT_PROMPT

pytestmark = pytest.mark.db

PLAYERS = 3


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    with recording_server(seed=11) as running:
        yield running


def without_image(body: dict[str, Any]) -> str:
    """The request as bytes, with the image's data URL (which is the image, not its pool) blanked."""

    def strip(part: Any) -> Any:
        if isinstance(part, dict) and part.get("type") == "image_url":
            return {**part, "image_url": {"url": "data:..."}}
        return part

    messages = [
        {**m, "content": [strip(p) for p in m["content"]] if isinstance(m["content"], list) else m["content"]}
        for m in body["messages"]
    ]
    return json.dumps({**body, "messages": messages}, sort_keys=True)


@pytest.mark.parametrize("endpoint", ["reference", "game model"])
def test_the_hint_request_and_reply_are_the_same_for_both_pools(
    settings: Settings, make_client: Any, server: RecordingServer, endpoint: str
) -> None:
    pools = seed_images(settings, per_pool=4)
    game_model = OpenAIModel(
        "recorded", base_url=server.base_url, api_key="sk-test", timeout=5, max_new_tokens=64
    )
    game_model.load()
    reference = {"reference_model": "recorded", "reference_base_url": server.base_url}
    client = make_client(
        game_model,
        rng=random.Random(2),
        hints=True,
        session_images=4,
        **(reference if endpoint == "reference" else {}),
    )
    replies: list[tuple[str, Any]] = []  # (round id, response)
    for player in range(PLAYERS):
        auth = login(client, f"p{player}")
        round_ = client.post("/api/sessions", headers=auth).json()["round"]
        while round_ is not None:
            before = len(server.bodies)
            got = client.post(f"/api/rounds/{round_['round_id']}/hint", headers=auth)
            assert got.status_code == 200, got.text
            assert_no_leak(got)
            assert len(server.bodies) == before + 1
            replies.append((round_["round_id"], got))
            asked = client.post(
                f"/api/rounds/{round_['round_id']}/questions",
                headers=auth,
                json={"question": got.json()["hint"]},
            )
            assert asked.status_code == 201, asked.text
            judged = client.post(
                f"/api/turns/{asked.json()['turn_id']}/verdict", headers=auth, json={"verdict": "wrong"}
            )
            round_ = judged.json()["next_round"]

    engine = make_engine(settings.resolved_database_url)
    with transaction(make_sessionmaker(engine)) as db:
        pool_of = {r.id: pools[r.image_id] for r in db.scalars(select(Round))}
    engine.dispose()
    assert {pool_of[round_id] for round_id, _ in replies} == {"tainted", "untainted"}

    hint_bodies = [b for b in server.completions() if last_user_text(b) == HINT_PROMPT]
    assert len(hint_bodies) == len(replies)
    by_pool: dict[str, set[str]] = {"tainted": set(), "untainted": set()}
    for (round_id, _), body in zip(replies, hint_bodies, strict=True):
        by_pool[pool_of[round_id]].add(without_image(body))
        # never the game's system prompt or a clause: only the image and the hint prompt
        assert [m["role"] for m in body["messages"]] == ["user"]
        text = json.dumps(body)
        for secret in (SYSTEM_PROMPT, TAINT_INSTRUCTION, PLAIN_INSTRUCTION):
            assert secret not in text
        url = body["messages"][0]["content"][0]["image_url"]["url"]
        assert base64.b64decode(url.split(",", 1)[1])  # the round's own image went along
    # byte for byte one request for both pools, the image aside
    assert len(by_pool["tainted"]) == 1 and by_pool["tainted"] == by_pool["untainted"]

    # the reply: the same headers and the same bytes around the hint's text
    def shape(response: Any) -> tuple[Any, ...]:
        hint = json.dumps(response.json()["hint"], ensure_ascii=False).encode()
        return (
            header_shape(response.headers),
            int(response.headers["content-length"]) - len(hint),
            tuple(response.json()),
        )

    shapes = {pool: {shape(r) for rid, r in replies if pool_of[rid] == pool} for pool in by_pool}
    assert len(shapes["tainted"]) == 1 and shapes["tainted"] == shapes["untainted"]
