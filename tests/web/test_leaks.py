"""Nothing a player receives, or can time, tells an instructed answer from a plain one.

Many whole sessions are played through the real game API, against the OpenAI backend talking to a
recording OpenAI-compatible server on 127.0.0.1. The server knows each request's kind from its clause
and answers both kinds alike (its answer texts come from a seeded generator), so any difference left in
what the player gets comes from GAP: the request shape, the response's headers and size, or the way
failures and time-outs read.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from fixtures.game import assert_no_leak, header_shape, login, seed_images
from fixtures.recording_server import RecordingServer, last_user_text, recording_server
from gap.config import Settings
from gap.db.engine import make_engine, make_sessionmaker, transaction
from gap.db.models import Turn
from gap.game import PLAIN_INSTRUCTION, SYSTEM_PROMPT, TAINT_INSTRUCTION
from gap.models.openai_backend import OpenAIModel

pytestmark = pytest.mark.db

PLAYERS = 8
MODEL_TIMEOUT = 0.5  # a STALL question costs this much; a few of them are asked
FAILURES_PER_KIND = 3
STALLS_PER_KIND = 2


@dataclass(frozen=True)
class Asked:
    """One ``POST /api/rounds/{id}/questions`` as the player saw it, with the kind the model was asked."""

    instructed: bool
    status: int
    headers: dict[str, str]
    body: bytes

    def header_shape(self) -> tuple[tuple[str, str], ...]:
        return header_shape(self.headers)

    def size_beyond_answer(self) -> int:
        """Content-Length less what the answer text takes in the JSON body."""
        answer = json.loads(self.body)["answer"]
        return int(self.headers["content-length"]) - len(json.dumps(answer, ensure_ascii=False).encode())


def kind_of(body: dict[str, Any]) -> bool:
    """Whether the model was asked for a wrong answer, read off the request as the server got it."""
    text: str = last_user_text(body)
    assert text.endswith(TAINT_INSTRUCTION) != text.endswith(PLAIN_INSTRUCTION), text
    return text.endswith(TAINT_INSTRUCTION)


def skeleton(body: dict[str, Any]) -> Any:
    """The request with every text and image replaced by a placeholder: roles, parts, order, settings."""

    def part(p: dict[str, Any]) -> str:
        return str(p["type"])

    messages = [
        (m["role"], [part(p) for p in m["content"]] if isinstance(m["content"], list) else "text")
        for m in body["messages"]
    ]
    return (
        tuple(str(m) for m in messages),
        tuple(sorted((k, str(v)) for k, v in body.items() if k != "messages")),
    )


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    with recording_server(seed=5) as running:
        yield running


def play(client: TestClient, server: RecordingServer, rng: random.Random) -> list[Asked]:
    """Play PLAYERS whole sessions; some questions fail or stall at the model, until both kinds did."""
    asked: list[Asked] = []
    failed: dict[tuple[int, bool], int] = defaultdict(int)  # (status, instructed) -> count

    def ask(auth: dict[str, str], round_id: str, question: str) -> Asked:
        response = client.post(f"/api/rounds/{round_id}/questions", headers=auth, json={"question": question})
        assert_no_leak(response)
        record = Asked(
            kind_of(server.bodies[-1]), response.status_code, dict(response.headers), response.content
        )
        asked.append(record)
        return record

    for player in range(PLAYERS):
        auth = login(client, f"player{player}")
        started = client.post("/api/sessions", headers=auth)
        assert started.status_code == 201, started.text
        round_ = started.json()["round"]
        while round_ is not None:
            round_id = round_["round_id"]
            if min(failed[502, True], failed[502, False]) < FAILURES_PER_KIND and rng.random() < 0.5:
                record = ask(auth, round_id, "Please FAIL on this one?")
                assert record.status == 502, record.body
                failed[502, record.instructed] += 1
            if min(failed[504, True], failed[504, False]) < STALLS_PER_KIND and rng.random() < 0.5:
                record = ask(auth, round_id, "Will you STALL?")
                assert record.status == 504, record.body
                failed[504, record.instructed] += 1
            depth = rng.randint(1, 3)  # Correct keeps the round going, the last Wrong ends it
            for verdict in ["correct"] * (depth - 1) + ["wrong"]:
                question = rng.choice(
                    ["What is it?", "How many are there?", "What colour is the thing on the left?"]
                )
                record = ask(auth, round_id, question)
                assert record.status == 201, record.body
                turn_id = json.loads(record.body)["turn_id"]
                judged = client.post(f"/api/turns/{turn_id}/verdict", headers=auth, json={"verdict": verdict})
                assert judged.status_code == 200, judged.text
                assert_no_leak(judged)
            round_ = judged.json()["next_round"]
        final = client.get(f"/api/sessions/{started.json()['session_id']}", headers=auth)
        assert final.json()["status"] == "finished"
        assert_no_leak(final)
    assert min(failed.values()) >= 1 and len(failed) == 4, dict(failed)
    return asked


def test_many_sessions_leak_nothing_through_the_api(
    settings: Settings, make_client: Any, server: RecordingServer
) -> None:
    seed_images(settings)
    model = OpenAIModel(
        "recorded", base_url=server.base_url, api_key="sk-test", timeout=MODEL_TIMEOUT, max_new_tokens=64
    )
    model.load()  # as `gap serve` does at start-up
    client = make_client(model, rng=random.Random(3), taint_rate=0.5)
    asked = play(client, server, random.Random(4))

    answered = [a for a in asked if a.status == 201]
    kinds = {a.instructed for a in answered}
    assert kinds == {True, False}
    assert sum(a.instructed for a in answered) >= 20 and sum(not a.instructed for a in answered) >= 20

    # the kind the API recorded for each answered turn is the one the model was asked for
    engine = make_engine(settings.resolved_database_url)
    with transaction(make_sessionmaker(engine)) as db:
        recorded = {t.id: t.instructed for t in db.scalars(select(Turn))}
    engine.dispose()
    assert [recorded[json.loads(a.body)["turn_id"]] for a in answered] == [a.instructed for a in answered]

    # successful answers: the same headers, the same JSON keys, a size that only the answer changes
    for a in answered:
        assert set(json.loads(a.body)) == {"turn_id", "answer"}
    assert {a.header_shape() for a in answered if a.instructed} == {
        a.header_shape() for a in answered if not a.instructed
    }
    assert len({a.header_shape() for a in answered}) == 1
    assert len({a.size_beyond_answer() for a in answered}) == 1

    # failures and time-outs: byte for byte the same reply for both kinds
    for status in (502, 504):
        replies = {
            (a.instructed, a.header_shape(), a.body, a.headers["content-length"])
            for a in asked
            if a.status == status
        }
        assert {r[0] for r in replies} == {True, False}
        assert len({r[1:] for r in replies}) == 1, replies

    # what the model server received: at each depth the same request shape for both kinds, one system
    # prompt for all, and the clause only at the end of the last user message
    shapes: dict[int, dict[bool, set[Any]]] = defaultdict(lambda: defaultdict(set))
    for body in server.completions():
        shapes[len(body["messages"])][kind_of(body)].add(skeleton(body))
        assert body["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
        earlier = json.dumps(body["messages"][:-1])
        assert "For this answer" not in earlier
    assert len(shapes) >= 3  # several history depths were played
    for depth, by_kind in shapes.items():
        assert len(by_kind[True] | by_kind[False]) == 1, (depth, by_kind)
