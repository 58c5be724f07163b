"""Request and response bodies of the HTTP API (the public contract; see issue [game-core])."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gap.services.game import MAX_CORRECTION_CHARS
from gap.services.players import MAX_NAME_CHARS

# Text the server refuses once stripped is refused by the schema too: at least one non-space character.
NOT_BLANK = r"\S"


class GuestIn(BaseModel):
    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS, pattern=NOT_BLANK, examples=["Ada"])


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
    question: str = Field(
        min_length=1,
        pattern=NOT_BLANK,
        description="Free-form question about the image: 1 to GAP_MAX_QUESTION_CHARS (500) characters.",
        examples=["What color is the car?"],
    )


class AnswerOut(BaseModel):
    turn_id: str
    answer: str


class HintOut(BaseModel):
    hint: str = Field(description="A suggested question; asked as it is, its turn is marked hinted.")


class VerdictIn(BaseModel):
    # the schema says what judge() refuses: a correction comes with a Wrong verdict only
    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"verdict": {"const": "correct"}}},
            "then": {"properties": {"correction": {"type": "null"}}},
        }
    )

    verdict: Literal["correct", "wrong"]
    correction: str | None = Field(
        default=None,
        max_length=MAX_CORRECTION_CHARS,
        description="Optional: the right answer, with a Wrong verdict only.",
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
    """Every error the app itself answers: one message for a person to read."""

    detail: str


class FieldErrorOut(BaseModel):
    """One problem FastAPI found while validating the request (its own shape; more keys may come)."""

    loc: list[str | int] = Field(description="Where: `body`, `query` or `path`, then the field.")
    msg: str
    type: str


class UnprocessableOut(BaseModel):
    """A 422: FastAPI's list of field errors when the request does not fit the schema, or the app's
    one message when it does but is still refused (a NUL character, a question over the limit...)."""

    detail: list[FieldErrorOut] | str
