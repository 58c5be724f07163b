"""The logged-in player's rank, for the end-of-session screen and the bot's ``/me``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from gap.db.engine import reading
from gap.services.leaderboard import Window, rank_of
from gap.web.deps import Context, PlayerId

router = APIRouter(prefix="/api/me", tags=["players"])


class RankOut(BaseModel):
    window: Window
    rank: int | None = Field(description="1 = best; null until the player finishes a session in the window.")


@router.get("/rank", response_model=RankOut)
def my_rank(
    ctx: Context,
    player_id: PlayerId,
    window: Annotated[Window, Query(description="all, week or day")] = Window.ALL,
) -> RankOut:
    """Rank by credited points (settled sessions only), like the leaderboard (ties share a rank)."""
    with reading(ctx.factory) as db:
        return RankOut(window=window, rank=rank_of(db, player_id=player_id, window=window, now=ctx.clock()))
