"""`GAP_SEED`: a replayed experiment is served alike, whatever order its players' requests arrive in.

Each replay is a fresh database with the same images imported anew (new image ids), as `gap lab`
runs it; two players interleave their sessions in one order on the first replay and in the other
order on the second. What each player is served (the images of its sessions, in order, and which
answers were instructed wrong) must not change, and a different seed must change it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from fixtures.game import ManualClock, login, seed_images
from gap.config import Settings
from gap.db.engine import make_engine, make_sessionmaker, transaction
from gap.db.models import GameSession, Image, Player, Round, Turn
from gap.models.base import ChatMessage, ImageInput
from gap.web.app import create_app

PLAYERS = ("Ada", "Grace")
SESSIONS = 2
QUESTIONS = 3


class PlainModel:
    name = "plain"

    def answer(self, image: ImageInput, messages: list[ChatMessage], system: str | None = None) -> str:
        return "two"


Served = dict[str, list[tuple[int, int, str, str, int, bool]]]
"""Per player name: (session, round, pool, image sha256, question, instructed), in order."""


def served(settings: Settings) -> Served:
    engine = make_engine(settings.resolved_database_url)
    query = (
        select(
            Player.name,
            GameSession.created_at,
            Round.index,
            Round.pool,
            Image.sha256,
            Turn.index,
            Turn.instructed,
        )
        .join(GameSession, GameSession.player_id == Player.id)
        .join(Round, Round.session_id == GameSession.id)
        .join(Image, Image.id == Round.image_id)
        .outerjoin(Turn, Turn.round_id == Round.id)
        .order_by(Player.name, GameSession.created_at, Round.index, Turn.index)
    )
    out: Served = {}
    with transaction(make_sessionmaker(engine)) as db:
        starts: dict[str, list[object]] = {}
        for name, created, round_index, pool, sha, turn_index, instructed in db.execute(query):
            sessions = starts.setdefault(name, [])
            if created not in sessions:
                sessions.append(created)
            row = (sessions.index(created), round_index, pool, sha, turn_index or 0, bool(instructed))
            out.setdefault(name, []).append(row)
    engine.dispose()
    return out


def replay(tmp_path: Path, seed: int | None, order: tuple[str, ...]) -> Served:
    """Every player plays SESSIONS sessions, QUESTIONS Correct answers on each image, in turns of
    ``order``: the first player's session, the second's, and so on."""
    folder = tmp_path / f"replay-{seed}-{'-'.join(order)}"
    settings = Settings(
        data_dir=folder,
        database_url=f"sqlite:///{folder / 'gap.sqlite3'}",
        session_images=4,
        round_seconds=120,
        seed=seed,
    )
    clock = ManualClock()
    app = create_app(settings, model=PlainModel(), clock=clock)  # creates the schema
    seed_images(settings, per_pool=6)
    with TestClient(app) as client:
        headers = {name: login(client, name) for name in order}
        for _ in range(SESSIONS):
            for name in order:
                started = client.post("/api/sessions", headers=headers[name]).json()
                session_id, round_ = started["session_id"], started["round"]
                while round_ is not None:
                    for _ in range(QUESTIONS):
                        asked = client.post(
                            f"/api/rounds/{round_['round_id']}/questions",
                            json={"question": "How many?"},
                            headers=headers[name],
                        )
                        assert asked.status_code == 201, asked.text
                        verdict = client.post(
                            f"/api/turns/{asked.json()['turn_id']}/verdict",
                            json={"verdict": "correct"},
                            headers=headers[name],
                        )
                        assert verdict.status_code == 200, verdict.text
                    clock.advance(121)  # the round runs out; the session moves on
                    state = client.get(f"/api/sessions/{session_id}", headers=headers[name]).json()
                    round_ = state["round"]
    return served(settings)


def test_a_seeded_replay_serves_every_player_alike_in_any_request_order(tmp_path: Path) -> None:
    first = replay(tmp_path, 7, PLAYERS)
    again = replay(tmp_path, 7, tuple(reversed(PLAYERS)))
    assert sorted(first) == sorted(PLAYERS)
    assert all(len(rows) == SESSIONS * 4 * QUESTIONS for rows in first.values())
    assert first == again
    instructed = [row[5] for rows in first.values() for row in rows]
    assert any(instructed) and not all(instructed)  # the draws are draws, not constants


def test_another_seed_or_none_serves_other_draws(tmp_path: Path) -> None:
    first = replay(tmp_path, 7, PLAYERS)
    assert replay(tmp_path, 8, PLAYERS) != first
    assert replay(tmp_path, None, PLAYERS) != first
