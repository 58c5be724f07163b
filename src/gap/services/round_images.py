"""Each round's picture under its own URL, readable only by the round's player (issue 9, point 4).

A URL per image would let players pool what they learn about an image across sessions ("this one
never scores"); so the URL names the round and carries a key, an HMAC of the round id under the
player's token hash. Only the server (and the player, who holds the token) can compute it, an
``<img src>`` needs no header, the same image gets unrelated URLs in different rounds, and a new login
(a new token) retires the old keys.
"""

from __future__ import annotations

import hashlib
import hmac

from sqlalchemy import select
from sqlalchemy.orm import Session

from gap.db.models import GameSession, Player, Round
from gap.errors import NotFound


def round_image_key(round_id: str, token_hash: str) -> str:
    message = f"gap-round-image\0{round_id}".encode()
    return hmac.new(token_hash.encode(), message, hashlib.sha256).hexdigest()[:32]


def round_image_url(round_id: str, token_hash: str) -> str:
    """The URL of a round's picture for its player, whose token hash is ``token_hash``."""
    return f"/api/rounds/{round_id}/image?key={round_image_key(round_id, token_hash)}"


def round_image_id(db: Session, round_id: str, key: str) -> str:
    """The id of the round's image if ``key`` is its player's key; NotFound for anything else, alike."""
    row = db.execute(
        select(Round.image_id, Player.token_hash)
        .join(GameSession, GameSession.id == Round.session_id)
        .join(Player, Player.id == GameSession.player_id)
        .where(Round.id == round_id)
    ).one_or_none()
    expected = round_image_key(round_id, row.token_hash) if row is not None else ""
    if row is None or not hmac.compare_digest(expected.encode(), key.encode()):
        raise NotFound("no such image")
    return str(row.image_id)
