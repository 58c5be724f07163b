"""Request and response bodies of the HTTP API (the public contract; see issue [game-core])."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class GuestIn(BaseModel):
    name: str = Field(min_length=1, max_length=64, examples=["Ada"])


class TokenOut(BaseModel):
    player_id: str
    token: str


class MeOut(BaseModel):
    player_id: str
    name: str
    points: float = Field(description="Credited points: settled, as the leaderboards show them.")
    points_pending: float = Field(
        description="20 for each Wrong verdict not yet settled (whatever it turns out to be worth)."
    )


class TurnOut(BaseModel):
    turn_id: str
    question: str
    answer: str | None
    verdict: Literal["correct", "wrong"] | None


class RoundOut(BaseModel):
    round_id: str
    index: int = Field(description="1-based position of the image in the session.")
    image_url: str
    seconds_left: float
    turns: list[TurnOut]


class SessionCreatedOut(BaseModel):
    session_id: str
    images_total: int
    round: RoundOut | None


class SessionSummaryOut(BaseModel):
    """A finished session's counts; none depends on an image's pool (points are credited later)."""

    questions: int = Field(description="Questions answered in the session.")
    caught: int = Field(description="Answers marked Wrong (every one, whatever the image).")
    corrections: int = Field(description="Corrections typed with a Wrong verdict.")


class SessionOut(BaseModel):
    session_id: str
    status: Literal["active", "finished"]
    images_total: int
    images_done: int
    round: RoundOut | None
    summary: SessionSummaryOut | None = Field(description="Once the session is finished; null before.")


class QuestionIn(BaseModel):
    question: str = Field(description="Free-form question about the image (1 to 500 characters).")


class AnswerOut(BaseModel):
    turn_id: str
    answer: str


class HintOut(BaseModel):
    hint: str = Field(description="A suggested question; asked as it is, its turn is marked hinted.")


class VerdictIn(BaseModel):
    verdict: Literal["correct", "wrong"]
    correction: str | None = Field(
        default=None, description="Optional: the right answer, with a Wrong verdict."
    )


class VerdictOut(BaseModel):
    round_status: Literal["active", "ended"]
    session_status: Literal["active", "finished"]
    next_round: RoundOut | None


class StandingOut(BaseModel):
    rank: int
    name: str
    points: float


class ErrorOut(BaseModel):
    detail: str
