"""The logged-in player."""

from __future__ import annotations

from fastapi import APIRouter

from gap.db.engine import reading
from gap.services.players import credited_points, get_player, pending_points
from gap.web.deps import Context, PlayerId
from gap.web.schemas import MeOut

router = APIRouter(prefix="/api", tags=["players"])


@router.get("/me", response_model=MeOut)
def me(ctx: Context, player_id: PlayerId) -> MeOut:
    with reading(ctx.factory) as db:
        player = get_player(db, player_id)
        return MeOut(
            player_id=player.id,
            name=player.name,
            points=credited_points(db, player.id),
            points_pending=pending_points(db, player.id),
        )
