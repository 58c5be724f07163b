"""Logging in: guests now; Telegram Mini App users are added by the play issue."""

from __future__ import annotations

from fastapi import APIRouter, status

from gap.db.engine import transaction
from gap.services.players import create_player
from gap.web.deps import Context
from gap.web.schemas import GuestIn, TokenOut

router = APIRouter(prefix="/api/auth", tags=["auth"])


@router.post("/guest", response_model=TokenOut, status_code=status.HTTP_200_OK)
def guest(body: GuestIn, ctx: Context) -> TokenOut:
    """Create a guest player; keep the token, it is shown only once."""
    with transaction(ctx.factory) as db:
        player, token = create_player(db, name=body.name, now=ctx.clock())
        return TokenOut(player_id=player.id, token=token)
