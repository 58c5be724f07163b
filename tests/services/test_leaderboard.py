"""Leaderboard and rank agree, ties included, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from fixtures.game import png_bytes
from gap.db.engine import reading, transaction
from gap.db.models import GameSession, PointsEntry, Round, Turn
from gap.game import Pool
from gap.services.images import add_image
from gap.services.leaderboard import Window, leaderboard, rank_of
from gap.services.players import create_player
from gap.storage import LocalStore

pytestmark = pytest.mark.db
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def finished_session_with(db: Session, image_id: str, name: str, amounts: list[float]) -> str:
    player, _ = create_player(db, name=name, now=NOW)
    session = GameSession(
        player_id=player.id,
        status="finished",
        images_total=1,
        created_at=NOW,
        finished_at=NOW,
        settled_at=NOW,
    )
    session.rounds = [Round(index=1, image_id=image_id, pool="untainted", started_at=NOW, deadline=NOW)]
    db.add(session)
    db.flush()
    for i, amount in enumerate(amounts, 1):
        turn = Turn(
            round_id=session.rounds[0].id,
            index=i,
            question="q",
            answer="a",
            verdict="wrong",
            asked_at=NOW,
            elapsed_s=1.0,
        )
        db.add(turn)
        db.flush()
        db.add(
            PointsEntry(
                player_id=player.id,
                session_id=session.id,
                turn_id=turn.id,
                kind="settlement",
                amount=amount,
                created_at=NOW,
            )
        )
    return player.id


def test_near_equal_totals_tie_on_the_board_and_in_rank(
    db_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    with transaction(db_factory) as db:
        image = add_image(
            db,
            images=LocalStore(tmp_path),
            data=png_bytes(1),
            original_name="a.png",
            pool=Pool.UNTAINTED,
            now=NOW,
        )
        top = finished_session_with(db, image.id, "top", [30.0])
        a = finished_session_with(db, image.id, "a", [0.1, 0.2, 19.7])  # 20.000000000000004 in floats
        b = finished_session_with(db, image.id, "b", [20.0])
        last = finished_session_with(db, image.id, "last", [5.0])
    with reading(db_factory) as db:
        board = leaderboard(db, window=Window.ALL, limit=10, now=NOW)
        ranks = {pid: rank_of(db, player_id=pid, window=Window.ALL, now=NOW) for pid in (top, a, b, last)}
    assert [(s.rank, s.name, s.points) for s in board] == [
        (1, "top", 30.0),
        (2, "a", 20.0),
        (2, "b", 20.0),
        (4, "last", 5.0),
    ]
    assert ranks == {top: 1, a: 2, b: 2, last: 4}
