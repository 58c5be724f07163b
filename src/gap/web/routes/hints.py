"""Question hints (`GAP_HINTS`): one suggested question per round, from the reference model."""

from __future__ import annotations

from fastapi import APIRouter, Request

from gap.errors import NotFound
from gap.services import hints
from gap.web.deps import PlayerId
from gap.web.schemas import ErrorOut, HintOut

router = APIRouter(prefix="/api", tags=["game"])


@router.post(
    "/rounds/{round_id}/hint",
    response_model=HintOut,
    responses={
        404: {"model": ErrorOut, "description": "Hints are off, or not this player's round."},
        409: {"model": ErrorOut, "description": "The round is over, or its hint is still being written."},
        502: {"model": ErrorOut, "description": "The model failed to write a hint."},
        503: {"model": ErrorOut, "description": "The model is resting after failures: see Retry-After."},
        504: {"model": ErrorOut, "description": "The model took longer than its time-out."},
    },
)
async def hint(round_id: str, request: Request, player_id: PlayerId) -> HintOut:
    """A suggested question about the round's image; the same one on every call for this round."""
    service: hints.Hints | None = request.app.state.hints
    if service is None:
        raise NotFound("hints are off on this server")
    return HintOut(hint=await hints.hint(service, player_id, round_id))
