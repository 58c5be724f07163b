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
from typing import Any, cast

import anyio
import anyio.to_thread
from sqlalchemy import CursorResult, Table, and_, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from gap.db.engine import reading, transaction
from gap.db.models import CollectionRound, GameSession, Image, Player, Round, RoundHint, Turn, new_id
from gap.errors import (
    AlreadyJudged,
    AuthError,
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
from gap.services.players import UNKNOWN_TOKEN, hash_token
from gap.services.round_images import round_image_url
from gap.services.rounds import ModelKey, RoundModels
from gap.storage import Store

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
MAX_CORRECTION_CHARS = 1000
IMAGE_CACHE_SIZE = 64
"""Images whose bytes each process keeps for questions (a question used to read the file, or fetch
the object, every time)."""
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
    seed: int | None = None
    """`GAP_SEED`: every draw keyed on it (:meth:`draws`), so a replayed experiment is served alike."""
    pick_untainted: UntaintedPicker | None = None
    """Fills a new session's untainted slots (`GAP_IMAGE_POLICY`); None: uniformly."""
    round_models: RoundModels | None = None
    """The models of rounds of collection (`gap rounds`), by spec and adapter; None: ``model`` only."""
    hints: bool = False
    """`GAP_HINTS`: a question equal to its round's hint is marked ``hinted`` (:mod:`gap.services.hints`)."""

    def draws(self, *key: object) -> random.Random:
        """The generator for one draw. Under `GAP_SEED` it is keyed on the seed and ``key`` (who,
        which session, round and question), so concurrent players' requests may arrive in any order
        and each still gets what it got before; otherwise unpredictable, as production needs (tests
        pass a seeded generator instead)."""
        if self.seed is not None:
            return random.Random(":".join(str(part) for part in (self.seed, *key)))
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


# --- reading and advancing state --------------------------------------------------------------
#
# The question and the verdict are the hot path (issue 12): they read what they need in one joined
# query each, write with single conditional statements and build no ORM objects.


def _changed(result: Any) -> int:
    """Rows an UPDATE or DELETE touched."""
    return cast(CursorResult[Any], result).rowcount


@dataclass(frozen=True)
class _Live:
    """The round being played."""

    id: str
    index: int
    deadline: datetime
    fresh: bool = False
    """Started by this request: no question can have been asked on it yet."""


def advance_rounds(
    db: Session, session_id: str, status: str, rules: GameRules, now: datetime
) -> tuple[str, _Live | None]:
    """Close rounds whose deadline passed, start the next one, finish the session when none is left.

    Returns the session's status and the round being played (None when the session is over). Only
    rounds not yet ended are read, in one query.
    """
    if status != "active":
        return status, None
    open_rounds = db.execute(
        select(Round.id, Round.index, Round.started_at, Round.deadline)
        .where(Round.session_id == session_id, Round.ended_at.is_(None))
        .order_by(Round.index)
    ).all()
    for round_id, index, started_at, deadline in open_rounds:
        fresh = started_at is None
        if fresh:
            deadline = round_deadline(now, rules)
            started = db.execute(
                update(Round)
                .where(Round.id == round_id, Round.started_at.is_(None), Round.ended_at.is_(None))
                .values(started_at=now, deadline=deadline)
            )
            if not _changed(started):  # started by a racing request, or closed unplayed by the worker
                fresh = False
                row = db.execute(select(Round.deadline, Round.ended_at).where(Round.id == round_id)).one()
                if row.ended_at is not None:
                    continue
                deadline = row.deadline
        assert deadline is not None
        if not is_expired(deadline, now):
            return "active", _Live(round_id, index, deadline, fresh)
        db.execute(
            update(Round)
            .where(Round.id == round_id, Round.ended_at.is_(None))
            .values(ended_at=deadline, end_reason=EndReason.TIMEOUT.value)
        )
    finished = db.execute(
        update(GameSession)
        .where(GameSession.id == session_id, GameSession.status == "active")
        .values(status="finished", finished_at=now)
    )
    if _changed(finished):
        return "finished", None
    return str(db.scalar(select(GameSession.status).where(GameSession.id == session_id))), None


def _round_view(db: Session, live: _Live, token_hash: str, now: datetime) -> RoundView:
    turns = (
        []
        if live.fresh
        else db.execute(
            select(Turn.id, Turn.question, Turn.answer, Turn.verdict)
            .where(Turn.round_id == live.id)
            .order_by(Turn.index)
        ).all()
    )
    return RoundView(
        round_id=live.id,
        index=live.index,
        image_url=round_image_url(live.id, token_hash),
        seconds_left=round(seconds_left(live.deadline, now), 3),
        turns=[TurnView(*turn) for turn in turns],
    )


def _session_view(
    db: Session, session_id: str, status: str, current: _Live | None, now: datetime
) -> SessionView:
    images_total, token_hash = db.execute(
        select(GameSession.images_total, Player.token_hash)
        .join(Player, Player.id == GameSession.player_id)
        .where(GameSession.id == session_id)
    ).one()
    done = db.scalar(
        select(func.count())
        .select_from(Round)
        .where(Round.session_id == session_id, Round.ended_at.is_not(None))
    )
    return SessionView(
        session_id=session_id,
        status=status,
        images_total=images_total,
        images_done=done or 0,
        round=_round_view(db, current, token_hash, now) if current is not None else None,
        summary=_session_summary(db, session_id) if status == "finished" else None,
    )


def _session_summary(db: Session, session_id: str) -> SessionSummary:
    questions, caught, corrections = db.execute(
        select(
            func.count(),
            func.count().filter(Turn.verdict == Verdict.WRONG.value),
            func.count(Turn.correction),
        )
        .join(Round, Round.id == Turn.round_id)
        .where(Round.session_id == session_id, Turn.answer.is_not(None))
    ).one()
    return SessionSummary(questions=questions, caught=caught, corrections=corrections)


def owned_round(db: Session, player_id: str, round_id: str) -> Round:
    """The round when it is the player's: another player's round reads as missing (NotFound)."""
    rnd = db.get(Round, round_id)
    if rnd is None or rnd.session.player_id != player_id:
        raise NotFound("no such round")
    return rnd


def _active_session(db: Session, player_id: str) -> str | None:
    return db.scalar(
        select(GameSession.id).where(GameSession.player_id == player_id, GameSession.status == "active")
    )


# --- requests ---------------------------------------------------------------------------------


def start_session(ctx: GameContext, player_id: str) -> SessionView:
    """The player's active session, or a new one."""
    now = ctx.clock()
    try:
        with transaction(ctx.factory) as db:
            active = _active_session(db, player_id)
            if active is not None:
                status, current = advance_rounds(db, active, "active", ctx.rules, now)
                if status == "active":
                    return _session_view(db, active, status, current, now)
            session_id = _create_session(db, ctx, player_id, now)
            status, current = advance_rounds(db, session_id, "active", ctx.rules, now)
            return _session_view(db, session_id, status, current, now)
    except IntegrityError:
        # Another request created the active session first: serve that one.
        with transaction(ctx.factory) as db:
            active = _active_session(db, player_id)
            if active is None:
                raise
            status, current = advance_rounds(db, active, "active", ctx.rules, now)
            return _session_view(db, active, status, current, now)


def _create_session(db: Session, ctx: GameContext, player_id: str, now: datetime) -> str:
    pools: dict[str, list[str]] = {Pool.TAINTED: [], Pool.UNTAINTED: []}
    # in the order of their content, not of their ids: a seeded replay on a fresh import draws alike
    enabled = select(Image.id, Image.pool).where(Image.enabled.is_(True)).order_by(Image.sha256, Image.id)
    for image_id, pool in db.execute(enabled):
        pools[pool].append(image_id)
    key: tuple[object, ...] = ()
    if ctx.seed is not None:  # the player's name and how many sessions it had: stable across replays
        name = db.scalar(select(Player.name).where(Player.id == player_id))
        played = db.scalar(select(func.count()).where(GameSession.player_id == player_id))
        key = ("session", name, played)
    rng, pick = ctx.draws(*key), ctx.pick_untainted
    plan = plan_session(
        pools[Pool.TAINTED],
        pools[Pool.UNTAINTED],
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
    return session.id


def get_session(ctx: GameContext, player_id: str, session_id: str) -> SessionView:
    """The session as the player may see it; an expired round is closed here and the next served."""
    now = ctx.clock()
    with transaction(ctx.factory) as db:
        owner, status = db.execute(
            select(GameSession.player_id, GameSession.status).where(GameSession.id == session_id)
        ).one_or_none() or (None, None)
        if owner != player_id or status is None:
            raise NotFound("no such session")
        status, current = advance_rounds(db, session_id, status, ctx.rules, now)
        return _session_view(db, session_id, status, current, now)


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


async def ask(ctx: GameContext, token: str, round_id: str, question: str) -> tuple[str, str]:
    """Ask the model a question about the round's image. Returns (turn_id, answer).

    ``token`` is the player's bearer token: who they are and that the round is theirs are one query.
    The turn is stored before the model is called (so a second question races into a unique
    constraint, not into the model), the model runs outside any transaction and off the shared
    thread pool (:class:`ModelGate`), and a failed answer removes the turn again so the player can
    simply retry. Either way the round's deadline moves by the time the model took (at most the
    model time-out): the player's clock does not run while the server answers.
    """
    pending = await anyio.to_thread.run_sync(_open_turn, ctx, token, round_id, question)
    try:
        # Stored in the model's own worker thread: one hop for the answer and its storing.
        answer = await ctx.gate.answer_then(
            pending.image,
            pending.messages,
            pending.system,
            round_model(ctx, pending.round_model),
            then=functools.partial(_store_answer, ctx, pending),
        )
    except Exception as exc:
        await anyio.to_thread.run_sync(_drop_turn, ctx, pending)
        raise player_facing_error(exc) from exc
    if answer is None:
        # So late that the turn was given up as lost and the round moved on without it.
        raise player_facing_error(ModelTimeout(f"answer to turn {pending.turn_id} came after it was dropped"))
    return pending.turn_id, answer


def round_model(ctx: GameContext, key: ModelKey | None) -> Callable[[], VisionChatModel] | None:
    """The (spec, adapter) ``key`` of a session's round of collection as the model the gate calls,
    loaded (once per process) in the gate's thread, not the event loop; None: the gate's own."""
    if key is None or ctx.round_models is None:
        return None
    return functools.partial(ctx.round_models.get, *key)


def credited_deadline(deadline: datetime, asked_at: datetime, now: datetime, cap_s: float) -> datetime:
    """``deadline`` moved by the server's time on a request asked at ``asked_at`` (at most ``cap_s``):
    the player's clock does not run while the model answers or writes."""
    return deadline + timedelta(seconds=min(max((now - asked_at).total_seconds(), 0.0), cap_s))


def player_elapsed(started_at: datetime, deadline: datetime, now: datetime, round_seconds: float) -> float:
    """Seconds of the round the player has used at ``now``: the time since it started less what
    :func:`credited_deadline` gave back for the model's answers (the ``t`` of the player model)."""
    since_start = (now - started_at).total_seconds()
    return min(max(round_seconds - (deadline - now).total_seconds(), 0.0), since_start)


def _give_back_time(db: Session, ctx: GameContext, pending: _PendingQuestion, now: datetime) -> None:
    """Move the round's deadline by the model's answering time, capped at the model time-out."""
    db.execute(_MOVE_DEADLINE, {"round_id": pending.round_id, "new_deadline": _credited(ctx, pending, now)})


def _credited(ctx: GameContext, pending: _PendingQuestion, now: datetime) -> datetime:
    return credited_deadline(pending.deadline, pending.asked_at, now, ctx.model_timeout)


def _drop_turn(ctx: GameContext, pending: _PendingQuestion) -> None:
    with transaction(ctx.factory) as db:
        db.execute(delete(Turn).where(Turn.id == pending.turn_id, Turn.answer.is_(None)))
        _give_back_time(db, ctx, pending, ctx.clock())


def _store_answer(ctx: GameContext, pending: _PendingQuestion, answer: str, model_name: str) -> str | None:
    """The answer once stored; None when the turn was given up as lost before it came."""
    now = ctx.clock()
    values = {"turn_id": pending.turn_id, "new_answer": answer, "at": now, "model_name": model_name}
    with transaction(ctx.factory) as db:
        if db.get_bind().dialect.name == "postgresql":
            # One statement, one round trip: the answer, and the clock only if the answer was stored.
            values["new_deadline"] = _credited(ctx, pending, now)
            return answer if db.execute(_STORE_ANSWER_AND_MOVE_DEADLINE, values).scalar_one() else None
        stored = db.execute(_STORE_ANSWER, values)
        if not cast(CursorResult[Any], stored).rowcount:
            return None
        _give_back_time(db, ctx, pending, now)
    return answer


def player_facing_error(exc: Exception) -> Exception:
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


# The hot path's statements, built once with bound parameters (SQLAlchemy then keys its cache of
# compiled forms without walking a fresh statement each time), in Core: no ORM bulk-update logic.
_TURNS = cast(Table, Turn.__table__)
_ROUNDS = cast(Table, Round.__table__)
_ROUND_TURNS = (
    select(_TURNS.c.id, _TURNS.c.question, _TURNS.c.answer, _TURNS.c.verdict, _TURNS.c.asked_at)
    .where(_TURNS.c.round_id == bindparam("round_id"))
    .order_by(_TURNS.c.index)
)
_NEW_TURN = insert(_TURNS)
_STORE_ANSWER = (
    update(_TURNS)
    .where(_TURNS.c.id == bindparam("turn_id"), _TURNS.c.answer.is_(None))
    .values(answer=bindparam("new_answer"), answered_at=bindparam("at"), model=bindparam("model_name"))
)
_MOVE_OPEN_DEADLINE = (
    update(_ROUNDS).where(_ROUNDS.c.ended_at.is_(None)).values(deadline=bindparam("new_deadline"))
)
_MOVE_DEADLINE = _MOVE_OPEN_DEADLINE.where(_ROUNDS.c.id == bindparam("round_id"))
_STORED = _STORE_ANSWER.returning(_TURNS.c.round_id).cte("stored")
_STORE_ANSWER_AND_MOVE_DEADLINE = (
    select(func.count())
    .select_from(_STORED)
    .add_cte(_MOVE_OPEN_DEADLINE.where(_ROUNDS.c.id.in_(select(_STORED.c.round_id))).cte("moved"))
)
"""PostgreSQL's data-modifying CTEs: both updates in one statement, counting the answers stored. (No
parameter may be named after a column of ``turns``: SQLAlchemy would add it to the first's SET.)"""
_RECORD_VERDICT = (
    update(_TURNS)
    .where(_TURNS.c.id == bindparam("turn_id"), _TURNS.c.verdict.is_(None))
    .values(
        verdict=bindparam("new_verdict"), correction=bindparam("new_correction"), judged_at=bindparam("at")
    )
)

# Who asks, and the round or turn if it is theirs, in one query each, built once: no row is an
# unknown token, a row without a session a round or turn that is not theirs (or none).
_ASKER = (
    select(
        GameSession.id.label("session_id"),
        GameSession.status,
        GameSession.collection_round,
        Player.name.label("player_name"),
        Round.pool,
        Round.index.label("round_index"),
        Round.started_at,
        Round.deadline,
        Round.ended_at,
        Image.path,
        Image.sha256,
        Image.mime_type,
        CollectionRound.model.label("round_model"),
        CollectionRound.adapter.label("round_adapter"),
    )
    .select_from(Player)
    .outerjoin(Round, Round.id == bindparam("round_id"))
    .outerjoin(GameSession, and_(GameSession.id == Round.session_id, GameSession.player_id == Player.id))
    .outerjoin(Image, Image.id == Round.image_id)
    .outerjoin(CollectionRound, CollectionRound.id == GameSession.collection_round)
    .where(Player.token_hash == bindparam("token_hash"))
)
_JUDGE = (
    select(
        GameSession.id.label("session_id"),
        GameSession.status,
        Turn.answer,
        Turn.verdict,
        Turn.round_id,
        Round.deadline,
        Round.ended_at,
    )
    .select_from(Player)
    .outerjoin(Turn, Turn.id == bindparam("turn_id"))
    .outerjoin(Round, Round.id == Turn.round_id)
    .outerjoin(GameSession, and_(GameSession.id == Round.session_id, GameSession.player_id == Player.id))
    .where(Player.token_hash == bindparam("token_hash"))
)


def _open_turn(ctx: GameContext, token: str, round_id: str, question: str) -> _PendingQuestion:
    now = ctx.clock()
    try:
        with transaction(ctx.factory) as db:
            row = db.execute(_ASKER, {"token_hash": hash_token(token), "round_id": round_id}).one_or_none()
            if row is None:
                raise AuthError(UNKNOWN_TOKEN)
            question = _clean_question(question, ctx.max_question_chars)
            if row.session_id is None:
                raise NotFound("no such round")
            started_at, deadline, ended_at = row.started_at, row.deadline, row.ended_at
            playing = started_at is not None and ended_at is None and not is_expired(deadline, now)
            if not (playing and row.status == "active"):
                # Not the round in play: close what expired, start what is due, then look again.
                advance_rounds(db, row.session_id, row.status, ctx.rules, now)
                started_at, deadline, ended_at = db.execute(
                    select(Round.started_at, Round.deadline, Round.ended_at).where(Round.id == round_id)
                ).one()
            if ended_at is not None:
                raise RoundOver("this round is over")
            if started_at is None or deadline is None:
                raise Conflict("this round has not started yet")
            turns = list(db.execute(_ROUND_TURNS, {"round_id": round_id}))
            if turns and _lost(turns[-1].answer, turns[-1].asked_at, ctx, now):
                db.execute(delete(Turn).where(Turn.id == turns[-1].id, Turn.answer.is_(None)))
                turns.pop()
            if turns and turns[-1].verdict is None:
                raise AwaitingVerdict("mark the previous answer Correct or Wrong first")
            draws = ctx.draws("turn", row.player_name, row.sha256, row.round_index, len(turns) + 1)
            instructed = draw_instructed(Pool(row.pool), ctx.rules.taint_rate, draws)
            turn_id = new_id()
            db.execute(
                _NEW_TURN,
                {
                    "id": turn_id,
                    "round_id": round_id,
                    "index": len(turns) + 1,
                    "question": question,
                    "instructed": instructed,
                    "asked_at": now,
                    "elapsed_s": player_elapsed(started_at, deadline, now, ctx.rules.round_seconds),
                    "collection_round": row.collection_round,
                    "hinted": ctx.hints and _is_hint(db, round_id, question),
                },
            )
    except IntegrityError as exc:
        raise AwaitingVerdict("another question on this round is still being answered") from exc
    history = [(earlier.question, earlier.answer or "") for earlier in turns]
    prompt = turn_prompt(history, question, instructed=instructed)
    try:
        image = _image_input(ctx.images, row.path, row.sha256, row.mime_type)
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
        image=image,
        messages=prompt.messages,
        system=prompt.system,
        round_model=(row.round_model, row.round_adapter) if row.round_model is not None else None,
    )


def _is_hint(db: Session, round_id: str, question: str) -> bool:
    hint = db.get(RoundHint, round_id)
    return hint is not None and hint.matches(question)


@functools.lru_cache(maxsize=IMAGE_CACHE_SIZE)
def _image_input(store: Store, key: str, sha256: str, mime_type: str) -> ImageInput:
    """An image's bytes, fetched once per process: an image's content never changes under its hash."""
    return ImageInput(store.get(key), mime_type)


def _lost(answer: str | None, asked_at: datetime, ctx: GameContext, now: datetime) -> bool:
    """An unanswered question older than the model time-out: the process asking the model died."""
    limit = timedelta(seconds=ctx.model_timeout + STALE_TURN_MARGIN_S)
    return answer is None and now - asked_at > limit


def judge(
    ctx: GameContext, token: str, turn_id: str, verdict: Verdict, correction: str | None
) -> VerdictResult:
    """Record the player's verdict once; Wrong ends the round. Points come later, from settlement.

    ``token`` is the player's bearer token: who they are and that the turn is theirs are one query.
    """
    now = ctx.clock()
    token_hash = hash_token(token)
    with transaction(ctx.factory) as db:
        row = db.execute(_JUDGE, {"token_hash": token_hash, "turn_id": turn_id}).one_or_none()
        if row is None:
            raise AuthError(UNKNOWN_TOKEN)
        if correction is not None:
            correction = correction.strip() or None
        if correction is not None and verdict is not Verdict.WRONG:
            raise InputError("a correction can only come with a Wrong verdict")
        if correction is not None and len(correction) > MAX_CORRECTION_CHARS:
            raise InputError(f"correction must be at most {MAX_CORRECTION_CHARS} characters")
        if row.session_id is None:
            raise NotFound("no such turn")
        if row.verdict is not None:
            raise AlreadyJudged("this answer already has a verdict")
        if row.answer is None:
            raise Conflict("the answer is not ready yet")
        if row.ended_at is not None or (row.deadline is not None and is_expired(row.deadline, now)):
            raise RoundOver("this round is over")
        claimed = db.execute(
            _RECORD_VERDICT,
            {"turn_id": turn_id, "new_verdict": verdict.value, "new_correction": correction, "at": now},
        )
        if not _changed(claimed):
            raise AlreadyJudged("this answer already has a verdict")
        if not round_ends_after(verdict):
            # The round goes on (it is in play: checked above), so nothing else changes.
            return VerdictResult(round_status="active", session_status=row.status, next_round=None)
        db.execute(
            update(Round)
            .where(Round.id == row.round_id, Round.ended_at.is_(None))
            .values(ended_at=now, end_reason=EndReason.WRONG.value)
        )
        status, current = advance_rounds(db, row.session_id, row.status, ctx.rules, now)
        return VerdictResult(
            round_status="ended",
            session_status=status,
            next_round=_round_view(db, current, token_hash, now) if current is not None else None,
        )


def load_image(ctx: GameContext, image_id: str) -> tuple[bytes, str]:
    """The bytes and MIME type of an image, by its opaque id (from the store each time: a page loads
    a round's picture once, and an image removed from the store is a 404 at once)."""
    with reading(ctx.factory) as db:
        row = db.execute(select(Image.path, Image.mime_type).where(Image.id == image_id)).one_or_none()
        if row is None:
            raise NotFound("no such image")
    try:
        return ctx.images.get(row.path), row.mime_type
    except NotFound as exc:
        raise NotFound("no such image") from exc
