"""Leaderboards: players ranked by their credited points (those of settled sessions)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Numeric, cast, func, select
from sqlalchemy.orm import Session

from gap.db.models import GameSession, Player, PointsEntry


class Window(StrEnum):
    ALL = "all"
    WEEK = "week"
    DAY = "day"


WINDOW_LENGTH = {Window.WEEK: timedelta(days=7), Window.DAY: timedelta(days=1)}


@dataclass(frozen=True)
class Standing:
    rank: int
    player_id: str
    name: str
    points: float


def _rounded_total() -> ColumnElement[Any]:
    """A player's points to the cent, in SQL: the board and a player's rank then agree on ties,
    however settlement fractions add up in floating point."""
    return func.round(cast(func.coalesce(func.sum(PointsEntry.amount), 0.0), Numeric), 2)


def leaderboard(db: Session, *, window: Window, limit: int, now: datetime) -> list[Standing]:
    """Top ``limit`` players by points of sessions settled inside the window.

    Points count once settlement has credited them, several sessions at a time (METHOD.md
    section 5), so no session's worth appears on the board on its own; provisional points never do.
    Ties share a rank (1, 2, 2, 4).
    """
    points = _rounded_total().label("points")
    query = (
        select(Player.id, Player.name, points)
        .join(GameSession, GameSession.player_id == Player.id)
        .outerjoin(PointsEntry, PointsEntry.session_id == GameSession.id)
        .where(GameSession.settled_at.is_not(None))
        .group_by(Player.id, Player.name)
        .order_by(points.desc(), Player.name, Player.id)
        .limit(limit)
    )
    if window in WINDOW_LENGTH:
        query = query.where(GameSession.settled_at >= now - WINDOW_LENGTH[window])
    standings: list[Standing] = []
    for position, (player_id, name, total) in enumerate(db.execute(query), 1):
        total = float(total)
        tied = standings and standings[-1].points == total
        standings.append(Standing(standings[-1].rank if tied else position, player_id, name, total))
    return standings


def rank_of(db: Session, *, player_id: str, window: Window, now: datetime) -> int | None:
    """The player's rank in the window, or None when they have no settled session in it."""
    points = _rounded_total()
    per_player = (
        select(GameSession.player_id.label("player_id"), points.label("points"))
        .outerjoin(PointsEntry, PointsEntry.session_id == GameSession.id)
        .where(GameSession.settled_at.is_not(None))
        .group_by(GameSession.player_id)
    )
    if window in WINDOW_LENGTH:
        per_player = per_player.where(GameSession.settled_at >= now - WINDOW_LENGTH[window])
    table = per_player.subquery()
    mine = db.scalar(select(table.c.points).where(table.c.player_id == player_id))
    if mine is None:
        return None
    better = db.scalar(select(func.count()).select_from(table).where(table.c.points > mine))
    return int(better or 0) + 1
