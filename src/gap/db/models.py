"""The tables of GAP (SQLAlchemy 2 typed models). Alembic migrations own the schema.

Public ids are random hex strings, so no URL or response reveals order, counts or pools.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from gap._text import normalise_question

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite hands back naive ones otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given; GAP stores aware UTC datetimes only")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime}


class Player(Base):
    __tablename__ = "players"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    telegram_id: Mapped[int | None] = mapped_column(BigInteger, unique=True, default=None)
    created_at: Mapped[datetime]
    signup_ip_hash: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    """HMAC of the IP the player signed up from (`GAP_IP_HASH_KEY`), never the IP itself: only
    equal hashes are compared, for the dashboard's many-accounts flag."""


class Image(Base):
    __tablename__ = "images"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    pool: Mapped[str] = mapped_column(String(16), index=True)
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    mime_type: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    original_name: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_at: Mapped[datetime]
    meta: Mapped[dict[str, object] | None] = mapped_column(JSON, default=None)
    """Where the image came from: ``coco_id`` and ``categories`` for COCO imports, ``source`` and
    ``tags`` (and any other manifest columns) for manifest imports; null for plain ``gap images add``."""


class CollectionRound(Base):
    """A round of collection (a campaign): the model in the loop from ``started_at`` until the next
    round starts. Its ``id`` is the round number shown by `gap rounds`."""

    __tablename__ = "collection_rounds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(Text)
    adapter: Mapped[str | None] = mapped_column(Text, default=None)
    note: Mapped[str | None] = mapped_column(Text, default=None)
    started_at: Mapped[datetime] = mapped_column(index=True)


class GameSession(Base):
    __tablename__ = "sessions"
    __table_args__ = (
        # At most one active session per player, enforced by the database against racing requests.
        Index(
            "uq_sessions_one_active",
            "player_id",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    player_id: Mapped[str] = mapped_column(ForeignKey("players.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="active")
    images_total: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
    settled_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
    """When settlement credited this session's points (with others of the player's, never alone)."""
    collection_round: Mapped[int | None] = mapped_column(
        ForeignKey("collection_rounds.id"), default=None, index=True
    )
    """The round of collection current when the session started: its model answers the whole
    session, even after a newer round starts. Null before any `gap rounds start`."""

    rounds: Mapped[list[Round]] = relationship(
        back_populates="session", order_by="Round.index", cascade="all, delete-orphan"
    )


class Round(Base):
    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("session_id", "index"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id"), index=True)
    pool: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    deadline: Mapped[datetime | None] = mapped_column(default=None)
    ended_at: Mapped[datetime | None] = mapped_column(default=None)
    end_reason: Mapped[str | None] = mapped_column(String(16), default=None)

    session: Mapped[GameSession] = relationship(back_populates="rounds")
    image: Mapped[Image] = relationship()
    turns: Mapped[list[Turn]] = relationship(
        back_populates="round", order_by="Turn.index", cascade="all, delete-orphan"
    )


class Turn(Base):
    __tablename__ = "turns"
    __table_args__ = (UniqueConstraint("round_id", "index"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    round_id: Mapped[str] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(Text, default=None)
    instructed: Mapped[bool] = mapped_column(Boolean, default=False)
    model: Mapped[str | None] = mapped_column(Text, default=None)
    verdict: Mapped[str | None] = mapped_column(String(8), default=None)
    correction: Mapped[str | None] = mapped_column(Text, default=None)
    asked_at: Mapped[datetime]
    answered_at: Mapped[datetime | None] = mapped_column(default=None)
    judged_at: Mapped[datetime | None] = mapped_column(default=None)
    elapsed_s: Mapped[float] = mapped_column(Float)
    collection_round: Mapped[int | None] = mapped_column(
        ForeignKey("collection_rounds.id"), default=None, index=True
    )
    """Its session's round of collection (kept on the turn so exports filter without a join)."""
    hinted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    """The question is its round's hint (`GAP_HINTS`), up to case, spaces and end punctuation."""

    round: Mapped[Round] = relationship(back_populates="turns")


class RoundHint(Base):
    """The one suggested question of a round (`GAP_HINTS`). A row with no ``text`` is a hint being
    written: the first request claims the round, so a double tap asks the model once."""

    __tablename__ = "round_hints"

    round_id: Mapped[str] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"), primary_key=True)
    text: Mapped[str | None] = mapped_column(Text, default=None)
    model: Mapped[str | None] = mapped_column(Text, default=None)
    asked_at: Mapped[datetime]
    written_at: Mapped[datetime | None] = mapped_column(default=None)

    def matches(self, question: str) -> bool:
        """Whether ``question`` is this hint, up to case, spaces and end punctuation."""
        return bool(self.text) and normalise_question(self.text or "") == normalise_question(question)


class PointsEntry(Base):
    """One line of the points ledger, written by settlement only. A turn's points are the sum of its lines.

    ``kind`` is ``catch`` (20 for a Wrong on an instructed answer) or ``settlement`` (what brings an
    untainted Wrong to 20 x posterior; re-settling adds the difference only). Databases from before
    batched settlement also hold ``provisional`` lines (20 per untainted Wrong at verdict time);
    settlement counts them in a turn's total like any other line. Only lines of settled sessions
    are credited points.
    """

    __tablename__ = "points_ledger"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    player_id: Mapped[str] = mapped_column(ForeignKey("players.id", ondelete="CASCADE"), index=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    turn_id: Mapped[str] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime]


class ReferenceAnswer(Base):
    """The correct answer to a kept turn, for the fine-tuning set; one row per turn.

    ``source`` is ``player`` (the player's own correction) or ``model`` (a reference VLM, named in
    ``model``). A row whose ``text`` is null records failed attempts (``attempts``, ``last_error``), so a
    rerun retries exactly those and never asks again for a turn that already has an answer.
    """

    __tablename__ = "reference_answers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    turn_id: Mapped[str] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), unique=True)
    text: Mapped[str | None] = mapped_column(Text, default=None)
    source: Mapped[str] = mapped_column(String(16))
    model: Mapped[str | None] = mapped_column(Text, default=None)
    prompt_version: Mapped[str | None] = mapped_column(String(32), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class QualityFit(Base):
    """A stored summary of the reliability model fitted on the whole database, written by the worker.

    The dashboard shows the newest row instead of refitting inside a request. ``summary`` is JSON
    (see :mod:`gap.services.admin`).
    """

    __tablename__ = "quality_fits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(index=True)
    turns: Mapped[int] = mapped_column(Integer)
    summary: Mapped[str] = mapped_column(Text)
