"""Service views to API schemas."""

from __future__ import annotations

from dataclasses import asdict

from gap.services.game import RoundView, SessionView
from gap.web.schemas import RoundOut, SessionOut, SessionSummaryOut, TurnOut


def round_out(view: RoundView | None) -> RoundOut | None:
    if view is None:
        return None
    return RoundOut(
        round_id=view.round_id,
        index=view.index,
        image_url=view.image_url,
        seconds_left=view.seconds_left,
        turns=[
            TurnOut(turn_id=t.turn_id, question=t.question, answer=t.answer, verdict=t.verdict)  # type: ignore[arg-type]
            for t in view.turns
        ],
    )


def session_out(view: SessionView) -> SessionOut:
    return SessionOut(
        session_id=view.session_id,
        status=view.status,  # type: ignore[arg-type]
        images_total=view.images_total,
        images_done=view.images_done,
        round=round_out(view.round),
        summary=SessionSummaryOut(**asdict(view.summary)) if view.summary is not None else None,
    )
