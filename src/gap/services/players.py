"""Players, their bearer tokens and their points."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gap.db.models import GameSession, Player, PointsEntry, Round, Turn
from gap.errors import AuthError, InputError, NotFound
from gap.game.rules import POINTS_PER_CATCH, Verdict

MAX_NAME_CHARS = 64
UNKNOWN_TOKEN = "unknown or expired token"


def hash_token(token: str) -> str:
    """Only a hash of each token is stored, so a leaked database does not hand out logins."""
    return hashlib.sha256(token.encode()).hexdigest()


def clean_name(name: str) -> str:
    cleaned = " ".join(name.split())
    if not cleaned:
        raise InputError("name must not be empty")
    if len(cleaned) > MAX_NAME_CHARS:
        raise InputError(f"name must be at most {MAX_NAME_CHARS} characters, got {len(cleaned)}")
    return cleaned


def create_player(
    db: Session,
    *,
    name: str,
    now: datetime,
    telegram_id: int | None = None,
    signup_ip_hash: str | None = None,
) -> tuple[Player, str]:
    """A new player and the bearer token that logs them in (returned once, never stored)."""
    token = secrets.token_urlsafe(32)
    player = Player(
        name=clean_name(name),
        token_hash=hash_token(token),
        telegram_id=telegram_id,
        created_at=now,
        signup_ip_hash=signup_ip_hash,
    )
    db.add(player)
    db.flush()
    return player, token


def login_telegram(
    db: Session, *, telegram_id: int, name: str, now: datetime, signup_ip_hash: str | None = None
) -> tuple[Player, str]:
    """The player linked to a Telegram user (created on first visit) and a fresh token for them."""
    player = db.scalar(select(Player).where(Player.telegram_id == telegram_id))
    if player is None:
        try:
            with db.begin_nested():
                return create_player(
                    db, name=name, now=now, telegram_id=telegram_id, signup_ip_hash=signup_ip_hash
                )
        except IntegrityError:
            player = db.scalar(select(Player).where(Player.telegram_id == telegram_id))
            if player is None:
                raise
    token = secrets.token_urlsafe(32)
    player.token_hash = hash_token(token)
    return player, token


def player_for_token(db: Session, token: str) -> Player:
    player = db.scalar(select(Player).where(Player.token_hash == hash_token(token)))
    if player is None:
        raise AuthError(UNKNOWN_TOKEN)
    return player


def get_player(db: Session, player_id: str) -> Player:
    player = db.get(Player, player_id)
    if player is None:
        raise NotFound("no such player")
    return player


def credited_points(db: Session, player_id: str) -> float:
    """Points of the player's settled sessions: what the leaderboards show. Settlement credits
    several sessions at once (METHOD.md section 5), so no single session's worth can be read off."""
    total = db.scalar(
        select(func.coalesce(func.sum(PointsEntry.amount), 0.0))
        .join(GameSession, GameSession.id == PointsEntry.session_id)
        .where(PointsEntry.player_id == player_id, GameSession.settled_at.is_not(None))
    )
    return float(total or 0.0)


def pending_points(db: Session, player_id: str) -> float:
    """20 for each Wrong verdict of the player's not yet settled sessions, whatever the pool."""
    wrongs = db.scalar(
        select(func.count(Turn.id))
        .join(Round, Round.id == Turn.round_id)
        .join(GameSession, GameSession.id == Round.session_id)
        .where(
            GameSession.player_id == player_id,
            GameSession.settled_at.is_(None),
            Turn.verdict == Verdict.WRONG.value,
        )
    )
    return POINTS_PER_CATCH * int(wrongs or 0)
