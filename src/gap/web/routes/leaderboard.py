"""Public leaderboards."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from gap.db.engine import reading
from gap.services.leaderboard import Window, leaderboard
from gap.web.deps import Context
from gap.web.schemas import StandingOut

router = APIRouter(prefix="/api", tags=["players"])


@router.get("/leaderboard", response_model=list[StandingOut])
def board(
    ctx: Context,
    window: Annotated[Window, Query(description="all, week or day")] = Window.ALL,
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
) -> list[StandingOut]:
    with reading(ctx.factory) as db:
        rows = leaderboard(db, window=window, limit=limit, now=ctx.clock())
    return [StandingOut(rank=r.rank, name=r.name, points=r.points) for r in rows]
