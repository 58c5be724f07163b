"""Questions inside a round, and the verdicts on their answers."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, status

from gap.game import Verdict
from gap.services import game
from gap.web.deps import Context, Token
from gap.web.errors import error_responses
from gap.web.routes._convert import round_out
from gap.web.schemas import AnswerOut, QuestionIn, VerdictIn, VerdictOut

router = APIRouter(prefix="/api", tags=["game"])

_ERRORS = {
    404: "Not this player's, or no such id.",
    409: "The round is over, or the answer is already judged / not judged.",
}


@router.post(
    "/rounds/{round_id}/questions",
    response_model=AnswerOut,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses({**_ERRORS, 502: None, 503: None, 504: None}),
)
async def ask(round_id: str, body: QuestionIn, ctx: Context, token: Token) -> AnswerOut:
    """Ask the model about the round's image; the previous answer must have a verdict."""
    turn_id, answer = await game.ask(ctx, token, round_id, body.question)
    return AnswerOut(turn_id=turn_id, answer=answer)


@router.post("/turns/{turn_id}/verdict", response_model=VerdictOut, responses=error_responses(_ERRORS))
async def verdict(turn_id: str, body: VerdictIn, ctx: Context, token: Token) -> VerdictOut:
    """Mark an answer Correct (keep asking) or Wrong (the round ends; optionally say the right answer)."""
    # Async with one hop of its own: FastAPI checks a sync route's reply in a second thread hop.
    result = await anyio.to_thread.run_sync(
        game.judge, ctx, token, turn_id, Verdict(body.verdict), body.correction
    )
    return VerdictOut(
        round_status=result.round_status,  # type: ignore[arg-type]
        session_status=result.session_status,  # type: ignore[arg-type]
        next_round=round_out(result.next_round),
    )
