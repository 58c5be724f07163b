"""Question hints (`GAP_HINTS`): one suggested question per round, from the reference model."""

from __future__ import annotations

from fastapi import APIRouter, Request

from gap.errors import NotFound
from gap.services import hints
from gap.web.deps import PlayerId
from gap.web.errors import error_responses
from gap.web.schemas import HintOut

router = APIRouter(prefix="/api", tags=["game"])


@router.post(
    "/rounds/{round_id}/hint",
    response_model=HintOut,
    responses=error_responses(
        {
            404: "Hints are off, or not this player's round.",
            409: "The round is over, or its hint is still being written.",
            502: "The model failed to write a hint.",
            503: None,
            504: None,
        }
    ),
)
async def hint(round_id: str, request: Request, player_id: PlayerId) -> HintOut:
    """A suggested question about the round's image; the same one on every call for this round."""
    service: hints.Hints | None = request.app.state.hints
    if service is None:
        raise NotFound("hints are off on this server")
    return HintOut(hint=await hints.hint(service, player_id, round_id))
