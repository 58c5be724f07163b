"""Playing the game against the database: sessions, rounds, questions and verdicts.

Each public function is one request's worth of work. The rules come from :mod:`gap.game`; this
module only loads and stores. Every state change is a conditional UPDATE or an insert guarded by a
unique constraint, so racing requests (two tabs, a double tap) cannot double-count, on SQLite and on
PostgreSQL alike. Nothing is kept in the process between calls.

No points are written here: a verdict only records the verdict. Settlement
(:mod:`gap.services.quality`, run by the worker) credits points later, for several finished sessions
at once, so nothing a player sees while or right after playing depends on an image's pool.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.to_thread
from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from gap.db.engine import reading, transaction
from gap.db.models import CollectionRound, GameSession, Image, Round, RoundHint, Turn
from gap.errors import (
    AlreadyJudged,
    AwaitingVerdict,
    ConfigError,
    Conflict,
    GapError,
    InputError,
    ModelError,
    ModelTimeout,
    ModelUnavailable,
    NoImages,
    NotFound,
    RoundOver,
)
from gap.game import (
    EndReason,
    GameRules,
    Pool,
    Verdict,
    draw_instructed,
    is_expired,
    plan_session,
    round_deadline,
    round_ends_after,
    seconds_left,
    turn_prompt,
)
from gap.models.base import ChatMessage, ImageInput, VisionChatModel
from gap.models.gate import ModelGate
from gap.services.image_policy import UntaintedPicker
from gap.services.round_images import round_image_url
from gap.services.rounds import RoundModels
from gap.storage import Store

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
MAX_CORRECTION_CHARS = 1000
STALE_TURN_MARGIN_S = 10.0
"""A question unanswered this long past the model time-out was lost (its process died): it no longer
blocks the round."""


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class GameContext:
    """What the game needs to run; built once per app (or per CLI call / test)."""

    factory: sessionmaker[Session]
    rules: GameRules
    model: Callable[[], VisionChatModel]
    images: Store
    """Where the pools' images live (:func:`gap.storage.image_store`)."""
    gate: ModelGate
    """How questions await the model (own threads, deadline, breaker): :func:`gap.models.gate.model_gate`."""
    max_question_chars: int = 500
    model_timeout: float = 60.0
    clock: Clock = utcnow
    rng: random.Random | None = None
    pick_untainted: UntaintedPicker | None = None
    """Fills a new session's untainted slots (`GAP_IMAGE_POLICY`); None: uniformly."""
    round_models: RoundModels | None = None
    """The models of rounds of collection (`gap rounds`), by spec and adapter; None: ``model`` only."""
    hints: bool = False
    """`GAP_HINTS`: a question equal to its round's hint is marked ``hinted`` (:mod:`gap.services.hints`)."""

    def random(self) -> random.Random:
        # Unpredictable draws in production; tests pass a seeded generator.
        return self.rng if self.rng is not None else random.SystemRandom()


@dataclass(frozen=True)
class TurnView:
    turn_id: str
    question: str
    answer: str | None
    verdict: str | None


@dataclass(frozen=True)
class RoundView:
    round_id: str
    index: int
    image_url: str
    seconds_left: float
    turns: list[TurnView]


@dataclass(frozen=True)
class SessionSummary:
    """What a finished session shows: counts that do not depend on any image's pool."""

    questions: int
    caught: int
    """Wrong verdicts, every one of them, whatever the pool."""
    corrections: int


@dataclass(frozen=True)
class SessionView:
    session_id: str
    status: str
    images_total: int
    images_done: int
    round: RoundView | None
    summary: SessionSummary | None


@dataclass(frozen=True)
class VerdictResult:
    round_status: str
    session_status: str
    next_round: RoundView | None


def resolve_image_path(images_dir: Path, stored: str) -> Path:
    path = Path(stored)
    return path if path.is_absolute() else images_dir / path


# --- reading and advancing state --------------------------------------------------------------


def _advance(db: Session, session: GameSession, rules: GameRules, now: datetime) -> Round | None:
    """Close rounds whose deadline passed, start the next one, finish the session when none is left.

    Returns the round being played, or None when the session is over.
    """
    if session.status != "active":
        return None
    for rnd in session.rounds:
        if rnd.ended_at is not None:
            continue
        if rnd.started_at is None:
            db.execute(
                update(Round)
                .where(Round.id == rnd.id, Round.started_at.is_(None))
                .values(started_at=now, deadline=round_deadline(now, rules))
            )
            db.refresh(rnd)
            if rnd.ended_at is not None:  # closed unplayed by the worker meanwhile
                continue
        assert rnd.deadline is not None
        if rnd.ended_at is None and not is_expired(rnd.deadline, now):
            return rnd
        db.execute(
            update(Round)
            .where(Round.id == rnd.id, Round.ended_at.is_(None))
            .values(ended_at=rnd.deadline, end_reason=EndReason.TIMEOUT.value)
        )
        db.refresh(rnd)
    db.execute(
        update(GameSession)
        .where(GameSession.id == session.id, GameSession.status == "active")
        .values(status="finished", finished_at=now)
    )
    db.refresh(session)
    return None


def _round_view(rnd: Round, now: datetime) -> RoundView:
    assert rnd.deadline is not None
    return RoundView(
        round_id=rnd.id,
        index=rnd.index,
        image_url=round_image_url(rnd),
        seconds_left=round(seconds_left(rnd.deadline, now), 3),
        turns=[TurnView(t.id, t.question, t.answer, t.verdict) for t in rnd.turns],
    )


def _session_summary(session: GameSession) -> SessionSummary:
    turns = [t for r in session.rounds for t in r.turns if t.answer is not None]
    return SessionSummary(
        questions=len(turns),
        caught=sum(1 for t in turns if t.verdict == Verdict.WRONG.value),
        corrections=sum(1 for t in turns if t.correction is not None),
    )


def _session_view(session: GameSession, current: Round | None, now: datetime) -> SessionView:
    done = sum(1 for r in session.rounds if r.ended_at is not None)
    finished = session.status == "finished"
    return SessionView(
        session_id=session.id,
        status=session.status,
        images_total=session.images_total,
        images_done=done,
        round=_round_view(current, now) if current is not None else None,
        summary=_session_summary(session) if finished else None,
    )


def _owned_session(db: Session, player_id: str, session_id: str) -> GameSession:
    session = db.get(GameSession, session_id)
    if session is None or session.player_id != player_id:
        raise NotFound("no such session")
    return session


def _owned_round(db: Session, player_id: str, round_id: str) -> Round:
    rnd = db.get(Round, round_id)
    if rnd is None or rnd.session.player_id != player_id:
        raise NotFound("no such round")
    return rnd


# --- requests ---------------------------------------------------------------------------------


def start_session(ctx: GameContext, player_id: str) -> SessionView:
    """The player's active session, or a new one."""
    now = ctx.clock()
    try:
        with transaction(ctx.factory) as db:
            active = db.scalar(
                select(GameSession).where(GameSession.player_id == player_id, GameSession.status == "active")
            )
            if active is not None:
                current = _advance(db, active, ctx.rules, now)
                if active.status == "active":
                    return _session_view(active, current, now)
            session = _create_session(db, ctx, player_id, now)
            current = _advance(db, session, ctx.rules, now)
            return _session_view(session, current, now)
    except IntegrityError:
        # Another request created the active session first: serve that one.
        with transaction(ctx.factory) as db:
            active = db.scalar(
                select(GameSession).where(GameSession.player_id == player_id, GameSession.status == "active")
            )
            if active is None:
                raise
            current = _advance(db, active, ctx.rules, now)
            return _session_view(active, current, now)


def _create_session(db: Session, ctx: GameContext, player_id: str, now: datetime) -> GameSession:
    pools: dict[str, list[str]] = {Pool.TAINTED: [], Pool.UNTAINTED: []}
    for image_id, pool in db.execute(select(Image.id, Image.pool).where(Image.enabled.is_(True))):
        pools[pool].append(image_id)
    rng, pick = ctx.random(), ctx.pick_untainted
    plan = plan_session(
        sorted(pools[Pool.TAINTED]),
        sorted(pools[Pool.UNTAINTED]),
        ctx.rules.session_images,
        rng,
        None if pick is None else lambda candidates, k: pick(db, candidates, k, rng),
    )
    if not plan:
        raise NoImages("there are no images to play yet; add some with `gap images add`")
    session = GameSession(
        player_id=player_id,
        status="active",
        images_total=len(plan),
        created_at=now,
        collection_round=db.scalar(select(func.max(CollectionRound.id))),  # the current round, if any
    )
    session.rounds = [
        Round(index=i, image_id=planned.image_id, pool=planned.pool.value)
        for i, planned in enumerate(plan, 1)
    ]
    db.add(session)
    db.flush()
    return session


def get_session(ctx: GameContext, player_id: str, session_id: str) -> SessionView:
    """The session as the player may see it; an expired round is closed here and the next served."""
    now = ctx.clock()
    with transaction(ctx.factory) as db:
        session = _owned_session(db, player_id, session_id)
        current = _advance(db, session, ctx.rules, now)
        return _session_view(session, current, now)


def _clean_question(question: str, limit: int) -> str:
    cleaned = question.strip()
    if not cleaned:
        raise InputError("question must not be empty")
    if len(cleaned) > limit:
        raise InputError(f"question must be at most {limit} characters, got {len(cleaned)}")
    return cleaned


@dataclass(frozen=True)
class _PendingQuestion:
    turn_id: str
    round_id: str
    asked_at: datetime
    deadline: datetime
    image: ImageInput
    messages: list[ChatMessage]
    system: str | None
    round_model: tuple[str, str | None] | None
    """(spec, adapter) of the session's round of collection; None: the context's own model."""


async def ask(ctx: GameContext, player_id: str, round_id: str, question: str) -> tuple[str, str]:
    """Ask the model a question about the round's image. Returns (turn_id, answer).

    The turn is stored before the model is called (so a second question races into a unique
    constraint, not into the model), the model runs outside any transaction and off the shared
    thread pool (:class:`ModelGate`), and a failed answer removes the turn again so the player can
    simply retry. Either way the round's deadline moves by the time the model took (at most the
    model time-out): the player's clock does not run while the server answers.
    """
    cleaned = _clean_question(question, ctx.max_question_chars)
    pending = await anyio.to_thread.run_sync(_open_turn, ctx, player_id, round_id, cleaned)
    try:
        answer, model_name = await ctx.gate.answer(
            pending.image, pending.messages, pending.system, _round_model(ctx, pending)
        )
    except Exception as exc:
        await anyio.to_thread.run_sync(_drop_turn, ctx, pending)
        raise _player_facing(exc) from exc
    if not await anyio.to_thread.run_sync(_store_answer, ctx, pending, answer, model_name):
        # So late that the turn was given up as lost and the round moved on without it.
        raise _player_facing(ModelTimeout(f"answer to turn {pending.turn_id} came after it was dropped"))
    return pending.turn_id, answer


def _round_model(ctx: GameContext, pending: _PendingQuestion) -> Callable[[], VisionChatModel] | None:
    """The session's round model, loaded (once per process) in the gate's thread, not the event loop."""
    if pending.round_model is None or ctx.round_models is None:
        return None
    return functools.partial(ctx.round_models.get, *pending.round_model)


def _give_back_time(db: Session, ctx: GameContext, pending: _PendingQuestion, now: datetime) -> None:
    """Move the round's deadline by the model's answering time, capped at the model time-out."""
    spent = min(max((now - pending.asked_at).total_seconds(), 0.0), ctx.model_timeout)
    db.execute(
        update(Round)
        .where(Round.id == pending.round_id, Round.ended_at.is_(None))
        .values(deadline=pending.deadline + timedelta(seconds=spent))
    )


def _drop_turn(ctx: GameContext, pending: _PendingQuestion) -> None:
    with transaction(ctx.factory) as db:
        db.execute(delete(Turn).where(Turn.id == pending.turn_id, Turn.answer.is_(None)))
        _give_back_time(db, ctx, pending, ctx.clock())


def _store_answer(ctx: GameContext, pending: _PendingQuestion, answer: str, model_name: str) -> bool:
    now = ctx.clock()
    with transaction(ctx.factory) as db:
        stored = db.execute(
            update(Turn)
            .where(Turn.id == pending.turn_id, Turn.answer.is_(None))
            .values(answer=answer, answered_at=now, model=model_name)
        )
        if not cast(CursorResult[Any], stored).rowcount:
            return False
        _give_back_time(db, ctx, pending, now)
    return True


def _player_facing(exc: Exception) -> Exception:
    """The same few words for every model failure, whatever the backend said.

    A backend's message can differ between instructed and plain answers (a template that refuses a
    system prompt, say), and it names internal URLs; the player sees neither. Details go to the log.
    """
    if isinstance(exc, ModelUnavailable):
        return exc  # says only that the model is resting, and when to come back
    if isinstance(exc, ModelTimeout):
        log.warning("model answer timed out: %s", exc)
        return ModelTimeout("the model took too long to answer; please ask again")
    if isinstance(exc, ModelError | ConfigError):
        log.error("model failed to answer: %r", exc)
        return ModelError("the model could not answer right now; please ask again")
    return exc


def _open_turn(ctx: GameContext, player_id: str, round_id: str, question: str) -> _PendingQuestion:
    now = ctx.clock()
    try:
        with transaction(ctx.factory) as db:
            rnd = _owned_round(db, player_id, round_id)
            _advance(db, rnd.session, ctx.rules, now)
            db.refresh(rnd)
            if rnd.ended_at is not None:
                raise RoundOver("this round is over")
            if rnd.started_at is None or rnd.deadline is None:
                raise Conflict("this round has not started yet")
            turns = list(rnd.turns)
            if turns and _lost(turns[-1], ctx, now):
                db.execute(delete(Turn).where(Turn.id == turns[-1].id, Turn.answer.is_(None)))
                db.expire(rnd)
                turns.pop()
            if turns and turns[-1].verdict is None:
                raise AwaitingVerdict("mark the previous answer Correct or Wrong first")
            pool = Pool(rnd.pool)
            instructed = draw_instructed(pool, ctx.rules.taint_rate, ctx.random())
            turn = Turn(
                round_id=rnd.id,
                index=len(turns) + 1,
                question=question,
                instructed=instructed,
                asked_at=now,
                elapsed_s=(now - rnd.started_at).total_seconds(),
                collection_round=rnd.session.collection_round,
                hinted=ctx.hints and _is_hint(db, rnd.id, question),
            )
            db.add(turn)
            db.flush()
            image = rnd.image
            key = image.path
            history = [(earlier.question, earlier.answer or "") for earlier in turns]
            prompt = turn_prompt(history, question, instructed=instructed)
            turn_id = turn.id
            deadline = rnd.deadline
            campaign = db.get(CollectionRound, turn.collection_round) if turn.collection_round else None
            round_model = (campaign.model, campaign.adapter) if campaign is not None else None
    except IntegrityError as exc:
        raise AwaitingVerdict("another question on this round is still being answered") from exc
    try:
        data = ctx.images.get(key)
    except GapError as exc:
        with transaction(ctx.factory) as db:
            db.execute(delete(Turn).where(Turn.id == turn_id))
        if isinstance(exc, NotFound):
            raise NotFound("the image of this round is missing on the server") from exc
        raise
    return _PendingQuestion(
        turn_id=turn_id,
        round_id=round_id,
        asked_at=now,
        deadline=deadline,
        image=ImageInput(data, image.mime_type),
        messages=prompt.messages,
        system=prompt.system,
        round_model=round_model,
    )


def _is_hint(db: Session, round_id: str, question: str) -> bool:
    hint = db.get(RoundHint, round_id)
    return hint is not None and hint.matches(question)


def _lost(turn: Turn, ctx: GameContext, now: datetime) -> bool:
    """An unanswered question older than the model time-out: the process asking the model died."""
    limit = timedelta(seconds=ctx.model_timeout + STALE_TURN_MARGIN_S)
    return turn.answer is None and now - turn.asked_at > limit


def judge(
    ctx: GameContext, player_id: str, turn_id: str, verdict: Verdict, correction: str | None
) -> VerdictResult:
    """Record the player's verdict once; Wrong ends the round. Points come later, from settlement."""
    if correction is not None:
        correction = correction.strip() or None
    if correction is not None and verdict is not Verdict.WRONG:
        raise InputError("a correction can only come with a Wrong verdict")
    if correction is not None and len(correction) > MAX_CORRECTION_CHARS:
        raise InputError(f"correction must be at most {MAX_CORRECTION_CHARS} characters")
    now = ctx.clock()
    with transaction(ctx.factory) as db:
        turn = db.get(Turn, turn_id)
        if turn is None or turn.round.session.player_id != player_id:
            raise NotFound("no such turn")
        if turn.verdict is not None:
            raise AlreadyJudged("this answer already has a verdict")
        if turn.answer is None:
            raise Conflict("the answer is not ready yet")
        rnd, session = turn.round, turn.round.session
        if rnd.ended_at is not None or (rnd.deadline is not None and is_expired(rnd.deadline, now)):
            raise RoundOver("this round is over")
        claimed = db.execute(
            update(Turn)
            .where(Turn.id == turn_id, Turn.verdict.is_(None))
            .values(verdict=verdict.value, correction=correction, judged_at=now)
        )
        won = cast(CursorResult[Any], claimed).rowcount
        if not won:
            raise AlreadyJudged("this answer already has a verdict")
        if round_ends_after(verdict):
            db.execute(
                update(Round)
                .where(Round.id == rnd.id, Round.ended_at.is_(None))
                .values(ended_at=now, end_reason=EndReason.WRONG.value)
            )
            db.refresh(rnd)
        current = _advance(db, session, ctx.rules, now)
        round_over = rnd.ended_at is not None
        return VerdictResult(
            round_status="ended" if round_over else "active",
            session_status=session.status,
            next_round=_round_view(current, now) if round_over and current is not None else None,
        )


def load_image(ctx: GameContext, image_id: str) -> tuple[bytes, str]:
    """The bytes and MIME type of an image, by its opaque id."""
    with reading(ctx.factory) as db:
        image = db.get(Image, image_id)
        if image is None:
            raise NotFound("no such image")
        key, mime = image.path, image.mime_type
    try:
        return ctx.images.get(key), mime
    except NotFound as exc:
        raise NotFound("no such image") from exc
