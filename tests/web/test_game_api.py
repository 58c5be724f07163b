"""The game through its HTTP API, on the real database and a real (tiny) model."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select

from fixtures.game import ManualClock, RecordingModel, login, seed_images
from gap.config import Settings
from gap.db.engine import make_engine, make_sessionmaker, transaction
from gap.db.models import PointsEntry, Round, Turn
from gap.errors import ModelError
from gap.game import SYSTEM_PROMPT, TAINT_INSTRUCTION, instruction_for
from gap.models.base import VisionChatModel
from gap.services.game import STALE_TURN_MARGIN_S
from gap.services.quality import SettlePolicy
from gap.services.worker import run_pass, worker_config

pytestmark = pytest.mark.db

FORBIDDEN = ("taint", "untaint", "instruct", "pool")


def assert_no_leak(response: Any) -> None:
    """Nothing the client receives names the pool or the instruction."""
    blob = response.text.lower() + " ".join(f"{k}:{v}" for k, v in response.headers.items()).lower()
    for word in FORBIDDEN:
        assert word not in blob, f"{word!r} leaked in {response.request.url}: {blob[:300]}"


def db_rows(settings: Settings, model: type, **where: Any) -> list[Any]:
    engine = make_engine(settings.resolved_database_url)
    with transaction(make_sessionmaker(engine)) as db:
        query = select(model)
        for key, value in where.items():
            query = query.where(getattr(model, key) == value)
        rows = list(db.scalars(query))
    engine.dispose()
    return rows


def round_pool(settings: Settings, round_id: str) -> str:
    return db_rows(settings, Round, id=round_id)[0].pool


def turn_row(settings: Settings, turn_id: str) -> Turn:
    return db_rows(settings, Turn, id=turn_id)[0]


def settle(settings: Settings, clock: ManualClock, min_sessions: int = 1) -> None:
    """One worker pass, as `gap worker --once` runs it; ``min_sessions=1`` credits even one session."""
    engine = make_engine(settings.resolved_database_url)
    config = worker_config(settings)
    policy = SettlePolicy(min_sessions=min_sessions, max_age=config.policy.max_age)
    run_pass(make_sessionmaker(engine), replace(config, policy=policy), clock())
    engine.dispose()


def test_whole_session_with_transformers_backend(
    settings: Settings, make_client: Any, tiny_model: VisionChatModel, clock: ManualClock
) -> None:
    seed_images(settings)
    client: TestClient = make_client(tiny_model, rng=random.Random(1))
    auth = login(client)
    started = client.post("/api/sessions", headers=auth)
    assert started.status_code == 201
    body = started.json()
    assert body["images_total"] == 10
    session_id = body["session_id"]
    resumed = client.post("/api/sessions", headers=auth)
    assert resumed.status_code == 201 and resumed.json()["session_id"] == session_id  # the active one

    image = client.get(body["round"]["image_url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert "img" not in body["round"]["image_url"]

    seen_indexes = []
    round_ = body["round"]
    for step in range(40):
        state = client.get(f"/api/sessions/{session_id}", headers=auth).json()
        assert_no_leak(client.get(f"/api/sessions/{session_id}", headers=auth))
        if state["status"] == "finished":
            break
        assert state["summary"] is None  # only once the session is over
        round_ = state["round"]
        seen_indexes.append(round_["index"])
        asked = client.post(
            f"/api/rounds/{round_['round_id']}/questions",
            headers=auth,
            json={"question": "What colour is it?"},
        )
        assert asked.status_code == 201, asked.text
        assert_no_leak(asked)
        assert asked.json()["answer"].strip()
        verdict = "correct" if step % 3 == 0 else "wrong"
        judged = client.post(
            f"/api/turns/{asked.json()['turn_id']}/verdict", headers=auth, json={"verdict": verdict}
        )
        assert judged.status_code == 200, judged.text
        assert_no_leak(judged)
        assert judged.json()["round_status"] == ("active" if verdict == "correct" else "ended")
    assert state["status"] == "finished"
    assert state["images_done"] == 10
    assert sorted(set(seen_indexes)) == list(range(1, 11))
    turns = db_rows(settings, Turn)
    wrongs = sum(t.verdict == "wrong" for t in turns)
    assert "points" not in state  # a session's points would name its images' pools (issue 9.3)
    assert state["summary"] == {"questions": len(turns), "caught": wrongs, "corrections": 0}
    me = client.get("/api/me", headers=auth).json()
    assert (me["points"], me["points_pending"]) == (0, 20.0 * wrongs)  # every Wrong a pending 20
    assert db_rows(settings, PointsEntry) == [] and client.get("/api/leaderboard").json() == []
    settle(settings, clock)
    credited = sum(e.amount for e in db_rows(settings, PointsEntry))
    me = client.get("/api/me", headers=auth).json()
    assert (me["points"], me["points_pending"]) == (pytest.approx(credited), 0)
    board = client.get("/api/leaderboard").json()
    assert board[0]["name"] == "Ada" and board[0]["points"] == pytest.approx(credited, abs=0.01)
    new = client.post("/api/sessions", headers=auth)
    assert new.status_code == 201 and new.json()["session_id"] != session_id


def test_server_clock_enforces_the_round_limit(
    settings: Settings, make_client: Any, tiny_model: VisionChatModel, clock: ManualClock
) -> None:
    seed_images(settings)
    client = make_client(tiny_model, round_seconds=5)
    auth = login(client)
    first = client.post("/api/sessions", headers=auth).json()
    session_id, round_id = first["session_id"], first["round"]["round_id"]
    assert first["round"]["seconds_left"] == pytest.approx(5)
    clock.advance(2)
    state = client.get(f"/api/sessions/{session_id}", headers=auth).json()
    assert state["round"]["round_id"] == round_id and state["round"]["seconds_left"] == pytest.approx(3)
    asked = client.post(
        f"/api/rounds/{round_id}/questions", headers=auth, json={"question": "How many?"}
    ).json()
    clock.advance(3)  # the deadline: the answer can no longer be judged, nor another question asked
    late = client.post(f"/api/turns/{asked['turn_id']}/verdict", headers=auth, json={"verdict": "wrong"})
    assert late.status_code == 409
    assert (
        client.post(f"/api/rounds/{round_id}/questions", headers=auth, json={"question": "x"}).status_code
        == 409
    )
    state = client.get(f"/api/sessions/{session_id}", headers=auth).json()
    assert state["images_done"] == 1 and state["round"]["index"] == 2
    assert turn_row(settings, asked["turn_id"]).verdict is None  # time-out: no verdict recorded
    for _ in range(9):
        clock.advance(5)
        state = client.get(f"/api/sessions/{session_id}", headers=auth).json()
    assert state["status"] == "finished" and state["round"] is None
    assert state["summary"] == {"questions": 1, "caught": 0, "corrections": 0}


def test_conflicts_and_bad_input(settings: Settings, make_client: Any, tiny_model: VisionChatModel) -> None:
    seed_images(settings)
    client = make_client(tiny_model)
    auth = login(client)
    round_id = client.post("/api/sessions", headers=auth).json()["round"]["round_id"]
    url = f"/api/rounds/{round_id}/questions"
    assert client.post(url, headers=auth, json={"question": "   "}).status_code == 422
    assert client.post(url, headers=auth, json={"question": "x" * 501}).status_code == 422
    assert client.post(url, headers=auth, json={}).status_code == 422
    assert client.post(url, headers=auth, json={"question": "x" * 500}).status_code == 201
    assert client.post(url, headers=auth, json={"question": "again?"}).status_code == 409  # no verdict yet
    turn_id = turn_id_of_last(client, auth)
    verdict_url = f"/api/turns/{turn_id}/verdict"
    assert client.post(verdict_url, headers=auth, json={"verdict": "maybe"}).status_code == 422
    assert (
        client.post(verdict_url, headers=auth, json={"verdict": "correct", "correction": "x"}).status_code
        == 422
    )
    assert client.post(verdict_url, headers=auth, json={"verdict": "correct"}).status_code == 200
    assert client.post(verdict_url, headers=auth, json={"verdict": "wrong"}).status_code == 409
    assert client.post(url, headers=auth, json={"question": "next?"}).status_code == 201
    assert (
        client.post(
            f"/api/turns/{turn_id_of_last(client, auth)}/verdict",
            headers=auth,
            json={"verdict": "wrong", "correction": "It is blue."},
        ).status_code
        == 200
    )
    assert client.post(url, headers=auth, json={"question": "after the end?"}).status_code == 409
    # no token, a bad token, another player's objects
    assert client.get("/api/me").status_code == 401
    assert client.get("/api/me", headers={"Authorization": "Bearer nope"}).status_code == 401
    other = login(client, "Bob")
    session_id = client.post("/api/sessions", headers=auth).json()["session_id"]
    assert client.get(f"/api/sessions/{session_id}", headers=other).status_code == 404
    assert client.post(url, headers=other, json={"question": "mine?"}).status_code == 404
    assert client.post(verdict_url, headers=other, json={"verdict": "wrong"}).status_code == 404
    assert client.get("/api/images/doesnotexist").status_code == 404


def turn_id_of_last(client: TestClient, auth: dict[str, str]) -> str:
    session_id = client.post("/api/sessions", headers=auth).json()["session_id"]
    return client.get(f"/api/sessions/{session_id}", headers=auth).json()["round"]["turns"][-1]["turn_id"]


def test_taint_rate_and_instruction_reach_model_only_on_tainted_rounds(
    settings: Settings, make_client: Any, tiny_model: VisionChatModel
) -> None:
    seed_images(settings)
    recorder = RecordingModel(tiny_model)
    tau = 0.5
    client = make_client(recorder, rng=random.Random(7), taint_rate=tau)
    counts = {"tainted": [0, 0], "untainted": [0, 0]}  # [instructed, total]
    for player in range(5):
        auth = login(client, f"p{player}")
        round_ = client.post("/api/sessions", headers=auth).json()["round"]
        while round_ is not None:
            for verdict in ("correct", "correct", "wrong"):  # Correct keeps the round going, Wrong ends it
                asked = client.post(
                    f"/api/rounds/{round_['round_id']}/questions",
                    headers=auth,
                    json={"question": "Is it red?"},
                )
                assert asked.status_code == 201
                turn = turn_row(settings, asked.json()["turn_id"])
                pool = round_pool(settings, round_["round_id"])
                counts[pool][0] += int(turn.instructed)
                counts[pool][1] += 1
                messages, system = recorder.calls[-1]
                assert system == SYSTEM_PROMPT  # the same on every turn; only the last clause differs
                assert messages[-1].text.endswith(instruction_for(turn.instructed))
                assert all(TAINT_INSTRUCTION not in m.text for m in messages[:-1])
                judged = client.post(
                    f"/api/turns/{asked.json()['turn_id']}/verdict", headers=auth, json={"verdict": verdict}
                )
                assert judged.status_code == 200
            round_ = judged.json()["next_round"]
    assert counts["untainted"][0] == 0 and counts["untainted"][1] == 75
    instructed, total = counts["tainted"]
    assert total == 75
    # binomial(75, 0.5): sd ~4.3; 4 sd bounds
    assert abs(instructed - tau * total) < 4 * (total * tau * (1 - tau)) ** 0.5


def test_points_follow_the_method(
    settings: Settings, make_client: Any, tiny_model: VisionChatModel, clock: ManualClock
) -> None:
    seed_images(settings)
    client = make_client(tiny_model, rng=random.Random(3), taint_rate=1.0)  # every tainted answer instructed
    auth = login(client)
    state = client.post("/api/sessions", headers=auth).json()
    wrongs = {"tainted": 0, "untainted": 0}
    round_ = state["round"]
    marks = ["wrong", "correct"]
    i = 0
    while round_ is not None:
        asked = client.post(
            f"/api/rounds/{round_['round_id']}/questions", headers=auth, json={"question": "Count?"}
        ).json()
        verdict = marks[i % 2]
        i += 1
        result = client.post(
            f"/api/turns/{asked['turn_id']}/verdict", headers=auth, json={"verdict": verdict}
        ).json()
        if verdict == "wrong":
            wrongs[round_pool(settings, round_["round_id"])] += 1
            round_ = result["next_round"]
            continue
        me = client.get("/api/me", headers=auth).json()
        assert me["points"] == 0 and me["points_pending"] == 20.0 * sum(wrongs.values())
        asked = client.post(
            f"/api/rounds/{round_['round_id']}/questions", headers=auth, json={"question": "Colour?"}
        ).json()
        result = client.post(
            f"/api/turns/{asked['turn_id']}/verdict", headers=auth, json={"verdict": "wrong"}
        ).json()
        wrongs[round_pool(settings, round_["round_id"])] += 1
        round_ = result["next_round"]
    final = client.get(f"/api/sessions/{state['session_id']}", headers=auth).json()
    assert final["summary"]["caught"] == sum(wrongs.values()) == 10
    settle(settings, clock)
    ledger = db_rows(settings, PointsEntry)
    catches = [e for e in ledger if e.kind == "catch"]
    untainted = [e for e in ledger if e.kind == "settlement"]
    assert len(ledger) == len(catches) + len(untainted)
    assert len(catches) == wrongs["tainted"] and {e.amount for e in catches} == {20.0}
    # untainted Wrongs: 20 x P(model wrong | verdicts) (this player caught every instructed answer)
    assert len(untainted) == wrongs["untainted"] and all(0 <= e.amount <= 20 for e in untainted), [
        e.amount for e in untainted
    ]
    me = client.get("/api/me", headers=auth).json()
    assert me["points"] == pytest.approx(sum(e.amount for e in ledger)) and me["points_pending"] == 0


def test_false_alarm_on_tainted_earns_nothing(
    settings: Settings, make_client: Any, tiny_model: VisionChatModel, clock: ManualClock
) -> None:
    seed_images(settings)
    client = make_client(tiny_model, rng=random.Random(5), taint_rate=0.0)  # nothing instructed
    auth = login(client)
    state = client.post("/api/sessions", headers=auth).json()
    round_, untainted_wrongs = state["round"], 0
    while round_ is not None:
        untainted_wrongs += round_pool(settings, round_["round_id"]) == "untainted"
        asked = client.post(
            f"/api/rounds/{round_['round_id']}/questions", headers=auth, json={"question": "Dog?"}
        ).json()
        round_ = client.post(
            f"/api/turns/{asked['turn_id']}/verdict", headers=auth, json={"verdict": "wrong"}
        ).json()["next_round"]
    final = client.get(f"/api/sessions/{state['session_id']}", headers=auth).json()
    assert final["summary"]["caught"] == 10  # false alarms count as caught too: the pool stays hidden
    settle(settings, clock)
    ledger = db_rows(settings, PointsEntry)
    assert {e.kind for e in ledger} == {"settlement"} and len(ledger) == untainted_wrongs


def all_at_once(n: int, request: Callable[[], Any]) -> list[int]:
    """Send ``n`` copies of a request from ``n`` threads released together; their status codes."""
    statuses: list[int] = []
    barrier = threading.Barrier(n)

    def send() -> None:
        barrier.wait()
        statuses.append(request().status_code)

    threads = [threading.Thread(target=send) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def test_concurrent_verdicts_count_once(
    settings: Settings, make_client: Any, tiny_model: VisionChatModel
) -> None:
    seed_images(settings)
    client = make_client(tiny_model, rng=random.Random(2), taint_rate=1.0)
    auth = login(client)
    round_ = client.post("/api/sessions", headers=auth).json()["round"]
    asked = client.post(
        f"/api/rounds/{round_['round_id']}/questions", headers=auth, json={"question": "How many?"}
    ).json()
    statuses = all_at_once(
        8,
        lambda: client.post(
            f"/api/turns/{asked['turn_id']}/verdict", headers=auth, json={"verdict": "wrong"}
        ),
    )
    assert sorted(statuses) == [200] + [409] * 7
    assert client.get("/api/me", headers=auth).json()["points_pending"] == 20.0  # one Wrong, once


def test_concurrent_questions_ask_the_model_once(
    settings: Settings, make_client: Any, tiny_model: VisionChatModel
) -> None:
    seed_images(settings)
    recorder = RecordingModel(tiny_model)
    client = make_client(recorder)
    auth = login(client)
    round_ = client.post("/api/sessions", headers=auth).json()["round"]
    statuses = all_at_once(
        6,
        lambda: client.post(
            f"/api/rounds/{round_['round_id']}/questions", headers=auth, json={"question": "Why?"}
        ),
    )
    assert sorted(statuses) == [201] + [409] * 5
    assert len(recorder.calls) == 1


def test_leaderboard_windows_and_hidden_points(
    settings: Settings, make_client: Any, tiny_model: VisionChatModel, clock: ManualClock
) -> None:
    seed_images(settings)
    client = make_client(tiny_model, rng=random.Random(4), session_images=2, taint_rate=1.0)

    def play(name: str) -> dict[str, str]:
        auth = login(client, name)
        round_ = client.post("/api/sessions", headers=auth).json()["round"]
        while round_ is not None:
            asked = client.post(
                f"/api/rounds/{round_['round_id']}/questions", headers=auth, json={"question": "?"}
            ).json()
            round_ = client.post(
                f"/api/turns/{asked['turn_id']}/verdict", headers=auth, json={"verdict": "wrong"}
            ).json()["next_round"]
        return auth

    play("old")
    settle(settings, clock)
    clock.advance(3 * 86400)
    recent = play("recent")
    assert client.get("/api/leaderboard?window=day").json() == []  # nothing credited yet
    settle(settings, clock)
    active = login(client, "active")
    client.post("/api/sessions", headers=active)
    everyone = {row["name"] for row in client.get("/api/leaderboard?window=all").json()}
    assert everyone == {"old", "recent"}
    assert {row["name"] for row in client.get("/api/leaderboard?window=week").json()} == {"old", "recent"}
    assert {row["name"] for row in client.get("/api/leaderboard?window=day").json()} == {"recent"}
    board = client.get("/api/leaderboard?window=all&limit=1").json()
    assert len(board) == 1 and board[0]["rank"] == 1
    assert board[0]["points"] >= client.get("/api/me", headers=recent).json()["points"] - 0.01
    assert client.get("/api/leaderboard?window=year").status_code == 422
    assert client.get("/api/leaderboard?limit=0").status_code == 422


def test_no_images_is_a_clear_conflict(make_client: Any, tiny_model: VisionChatModel) -> None:
    client = make_client(tiny_model)
    response = client.post("/api/sessions", headers=login(client))
    assert response.status_code == 409 and "images" in response.json()["detail"]


def test_openapi_documents_the_contract(make_client: Any, tiny_model: VisionChatModel) -> None:
    client = make_client(tiny_model)
    paths = client.get("/openapi.json").json()["paths"]
    for path in [
        "/api/auth/guest",
        "/api/me",
        "/api/sessions",
        "/api/sessions/{session_id}",
        "/api/rounds/{round_id}/questions",
        "/api/turns/{turn_id}/verdict",
        "/api/leaderboard",
    ]:
        assert path in paths
    assert client.get("/docs").status_code == 200


def test_whole_session_with_openai_backend(settings: Settings, make_client: Any, openai_server: Any) -> None:
    """The same game against a real OpenAI-compatible server (`transformers serve` on the tiny model)."""
    from gap.models.factory import load_model

    seed_images(settings)
    served = settings.model_copy(update={"openai_base_url": openai_server.base_url, "max_new_tokens": 8})
    recorder = RecordingModel(load_model(f"openai:{openai_server.model}", served))
    client = make_client(recorder, rng=random.Random(11), session_images=4, taint_rate=1.0)
    auth = login(client)
    state = client.post("/api/sessions", headers=auth).json()
    round_, asked_pools = state["round"], []
    while round_ is not None:
        asked = client.post(
            f"/api/rounds/{round_['round_id']}/questions",
            headers=auth,
            json={"question": "What is in the picture?"},
        )
        assert asked.status_code == 201, asked.text
        assert asked.json()["answer"].strip()
        asked_pools.append(round_pool(settings, round_["round_id"]))
        round_ = client.post(
            f"/api/turns/{asked.json()['turn_id']}/verdict", headers=auth, json={"verdict": "wrong"}
        ).json()["next_round"]
    final = client.get(f"/api/sessions/{state['session_id']}", headers=auth).json()
    assert final["status"] == "finished" and final["summary"]["caught"] == 4
    assert {system for _, system in recorder.calls} == {SYSTEM_PROMPT}
    clauses = [messages[-1].text.endswith(TAINT_INSTRUCTION) for messages, _ in recorder.calls]
    assert clauses == [pool == "tainted" for pool in asked_pools]
    models = {turn.model for turn in db_rows(settings, Turn)}
    assert models == {f"openai:{openai_server.model}"}  # each answer records the model that wrote it


class SystemPromptRefusingModel(RecordingModel):
    """A real model that fails on instructed requests only, with a message that would give them away."""

    def answer(self, image: Any, messages: list[Any], system: str | None = None) -> str:
        if messages[-1].text.endswith(TAINT_INSTRUCTION):
            raise ModelError("400 from http://10.0.0.7:8000/v1: System role not supported")
        return super().answer(image, messages, system=system)


def test_model_failures_reach_the_player_as_one_plain_message(
    settings: Settings, make_client: Any, tiny_model: VisionChatModel
) -> None:
    seed_images(settings)
    client = make_client(SystemPromptRefusingModel(tiny_model), rng=random.Random(8), taint_rate=1.0)
    auth = login(client)
    state = client.post("/api/sessions", headers=auth).json()
    round_, failures = state["round"], []
    while round_ is not None:
        url = f"/api/rounds/{round_['round_id']}/questions"
        asked = client.post(url, headers=auth, json={"question": "What is it?"})
        if round_pool(settings, round_["round_id"]) == "tainted":
            assert asked.status_code == 502
            failures.append(asked.json()["detail"])
            assert_no_leak(asked)
            # the failed turn is gone: the same round stays open for a new question
            now = client.get(f"/api/sessions/{state['session_id']}", headers=auth).json()["round"]
            assert now["round_id"] == round_["round_id"] and now["turns"] == []
            break
        assert asked.status_code == 201
        round_ = client.post(
            f"/api/turns/{asked.json()['turn_id']}/verdict", headers=auth, json={"verdict": "wrong"}
        ).json()["next_round"]
    assert failures == ["the model could not answer right now; please ask again"]


def test_a_lost_question_stops_blocking_its_round_after_the_model_timeout(
    settings: Settings, make_client: Any, tiny_model: VisionChatModel, clock: ManualClock
) -> None:
    """Issue 9.13: a process that died while the model answered left a turn with no answer."""
    seed_images(settings)
    client = make_client(tiny_model, model_timeout=30)
    auth = login(client)
    round_id = client.post("/api/sessions", headers=auth).json()["round"]["round_id"]
    engine = make_engine(settings.resolved_database_url)
    with transaction(make_sessionmaker(engine)) as db:
        db.add(Turn(round_id=round_id, index=1, question="lost?", asked_at=clock(), elapsed_s=0.0))
    engine.dispose()

    def ask() -> Any:
        return client.post(f"/api/rounds/{round_id}/questions", headers=auth, json={"question": "Red?"})

    clock.advance(30)  # within the model's time-out: the answer may still come
    assert ask().status_code == 409
    clock.advance(STALE_TURN_MARGIN_S + 1)
    asked = ask()
    assert asked.status_code == 201, asked.text
    turns = db_rows(settings, Turn, round_id=round_id)
    assert [(t.index, t.question) for t in turns] == [(1, "Red?")] and turns[0].answer


def test_the_models_time_moves_the_deadline_and_the_players_clock_only_when_its_answer_is_stored(
    settings: Settings, make_client: Any, clock: ManualClock
) -> None:
    """The answer and the round's clock are stored together (one statement on PostgreSQL): an answer
    whose turn was given up while the model answered stores nothing and moves no deadline. The next
    question's ``elapsed_s`` is the player's time, without the model's."""
    seed_images(settings)
    engine = make_engine(settings.resolved_database_url)
    give_up = [False]

    class SlowModel:
        name = "slow"

        def answer(self, image: Any, messages: Any, system: str | None = None) -> str:
            clock.advance(5)  # the model's time, which the player's clock must not pay for
            if give_up[0]:  # as a later question does to a turn it finds lost
                with transaction(make_sessionmaker(engine)) as db:
                    db.execute(delete(Turn).where(Turn.answer.is_(None)))
            return "yes"

    client = make_client(SlowModel(), model_timeout=30)
    auth = login(client)
    round_id = client.post("/api/sessions", headers=auth).json()["round"]["round_id"]

    def deadline() -> Any:
        return db_rows(settings, Round, id=round_id)[0].deadline

    before = deadline()
    asked = client.post(f"/api/rounds/{round_id}/questions", headers=auth, json={"question": "Red?"})
    assert asked.status_code == 201, asked.text
    assert (deadline() - before).total_seconds() == pytest.approx(5)
    client.post(f"/api/turns/{asked.json()['turn_id']}/verdict", headers=auth, json={"verdict": "correct"})

    clock.advance(2)  # the player thinks: its clock runs, the model's 5 s are not on it
    second = client.post(f"/api/rounds/{round_id}/questions", headers=auth, json={"question": "Green?"})
    assert second.status_code == 201, second.text
    assert [t.elapsed_s for t in db_rows(settings, Turn, round_id=round_id)] == [0.0, pytest.approx(2)]
    client.post(f"/api/turns/{second.json()['turn_id']}/verdict", headers=auth, json={"verdict": "correct"})

    give_up[0], before = True, deadline()
    lost = client.post(f"/api/rounds/{round_id}/questions", headers=auth, json={"question": "Blue?"})
    engine.dispose()
    assert lost.status_code == 504, lost.text
    assert deadline() == before
    assert [t.question for t in db_rows(settings, Turn, round_id=round_id)] == ["Red?", "Green?"]
