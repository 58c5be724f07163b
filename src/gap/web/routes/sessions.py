"""Sessions of N images."""

from __future__ import annotations

from fastapi import APIRouter, status

from gap.services import game
from gap.web.deps import Context, PlayerId
from gap.web.errors import error_responses
from gap.web.routes._convert import round_out, session_out
from gap.web.schemas import SessionCreatedOut, SessionOut

router = APIRouter(prefix="/api/sessions", tags=["game"])


@router.post(
    "",
    response_model=SessionCreatedOut,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses({409: "No images to play."}),
)
def start(ctx: Context, player_id: PlayerId) -> SessionCreatedOut:
    """Start a session, or return the player's active one (201 either way, as the contract fixes)."""
    view = game.start_session(ctx, player_id)
    return SessionCreatedOut(
        session_id=view.session_id, images_total=view.images_total, round=round_out(view.round)
    )


@router.get(
    "/{session_id}",
    response_model=SessionOut,
    responses=error_responses({404: "No such session, or not this player's."}),
)
def read(session_id: str, ctx: Context, player_id: PlayerId) -> SessionOut:
    """The session now; a round past its deadline is closed and the next one served."""
    return session_out(game.get_session(ctx, player_id, session_id))
