"""Background work that needs no person: close abandoned sessions, settle points, refit the dashboard.

One pass (:func:`run_pass`) does all three; ``gap worker`` loops over passes, and ``gap serve`` runs
the same loop in a thread unless told not to. Every step is safe to run from several processes at
once (conditional updates, ``SKIP LOCKED`` and settlement's lock) and safe to skip entirely: with no
worker, sessions close when their player returns and points are credited by the next pass, only late.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session, sessionmaker

from gap.config import Settings
from gap.db.engine import reading, transaction
from gap.db.models import GameSession, Round
from gap.errors import GapError
from gap.game import EndReason, GameRules
from gap.services.admin import (
    QualityView,
    fit_quietly,
    judged_turns,
    latest_quality_fit,
    store_quality_view,
    view_of_fit,
)
from gap.services.quality import DatabaseFit, SettlePolicy, SettleSummary, due_sessions, settle_points

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    rules: GameRules
    policy: SettlePolicy
    theta: float
    settings: Settings
    """The estimator settings (``GAP_QUALITY_*``) the refit uses, as every other consumer does."""


def settle_policy(settings: Settings) -> SettlePolicy:
    return SettlePolicy(
        min_sessions=settings.settle_min_sessions, max_age=timedelta(seconds=settings.settle_max_age)
    )


def worker_config(settings: Settings) -> WorkerConfig:
    rules = GameRules(
        round_seconds=settings.round_seconds,
        session_images=settings.session_images,
        taint_rate=settings.taint_rate,
    )
    return WorkerConfig(rules=rules, policy=settle_policy(settings), theta=settings.theta, settings=settings)


@dataclass(frozen=True, slots=True)
class PassReport:
    closed: int
    """Abandoned sessions finished."""
    settlement: SettleSummary | None
    """None when no player was due."""
    refitted: bool
    """Whether a new dashboard fit was stored (only when verdicts changed since the last one)."""


def close_abandoned(factory: sessionmaker[Session], rules: GameRules, now: datetime) -> int:
    """Finish active sessions whose current round ran out at least one round length ago.

    The player left: their expired round ends at its deadline, the rounds never shown end unplayed,
    and the session finishes then, so its verdicts reach settlement. A player who comes back in the
    meantime (a round just started) keeps the session: every update is conditional.
    """
    cutoff = now - timedelta(seconds=rules.round_seconds)
    expired = exists().where(
        Round.session_id == GameSession.id, Round.ended_at.is_(None), Round.deadline <= cutoff
    )
    closed = 0
    with transaction(factory) as db:
        sessions = db.scalars(
            select(GameSession)
            .where(GameSession.status == "active", expired)
            .with_for_update(skip_locked=True)  # several workers share the work (PostgreSQL)
        ).all()
        for session in sessions:
            closed += _close(db, session, cutoff)
    return closed


def _close(db: Session, session: GameSession, cutoff: datetime) -> int:
    late = [
        r for r in session.rounds if r.ended_at is None and r.deadline is not None and r.deadline <= cutoff
    ]
    if not late:
        return 0
    end = max(r.deadline for r in late if r.deadline is not None)
    timeout = EndReason.TIMEOUT.value
    db.execute(
        update(Round)
        .where(Round.session_id == session.id, Round.ended_at.is_(None), Round.deadline <= cutoff)
        .values(ended_at=Round.deadline, end_reason=timeout)
    )
    db.execute(
        update(Round)
        .where(Round.session_id == session.id, Round.ended_at.is_(None), Round.started_at.is_(None))
        .values(ended_at=end, end_reason=timeout)
    )
    still_open = exists().where(Round.session_id == session.id, Round.ended_at.is_(None))
    done = db.execute(
        update(GameSession)
        .where(GameSession.id == session.id, GameSession.status == "active", ~still_open)
        .values(status="finished", finished_at=end)
    )
    return int(getattr(done, "rowcount", 0) or 0)


def run_pass(factory: sessionmaker[Session], config: WorkerConfig, now: datetime) -> PassReport:
    """One pass of every background job; fits the reliability model only when there is a use for it."""
    closed = close_abandoned(factory, config.rules, now)
    with reading(factory) as db:
        due = bool(due_sessions(db, config.policy, now))
        judged = judged_turns(db)
        latest = latest_quality_fit(db)
    stale = latest is None or latest.turns != judged
    if not (due or stale):
        return PassReport(closed, None, False)
    fit: DatabaseFit | None = None
    try:
        fit = fit_quietly(factory, config.settings)
        view = view_of_fit(fit, theta=config.theta)
    except GapError as exc:
        log.warning("the reliability model could not be fitted: %s", exc.message)
        view = QualityView(False, f"the reliability model could not be fitted: {exc.message}", config.theta)
    settlement = None
    if due:
        posteriors = {} if fit is None else dict(zip(fit.turns["turn_id"], fit.p_wrong.tolist(), strict=True))
        settlement = settle_points(factory, posteriors, policy=config.policy, now=now)
    if stale:
        with transaction(factory) as db:
            store_quality_view(db, view, turns=judged, now=now)
    return PassReport(closed, settlement, stale)


def run_forever(
    factory: sessionmaker[Session],
    config: WorkerConfig,
    *,
    interval: float,
    stop: threading.Event,
    clock: Callable[[], datetime],
) -> None:
    """Passes every ``interval`` seconds until ``stop`` is set; a failed pass is logged, not fatal."""
    while not stop.is_set():
        try:
            report = run_pass(factory, config, clock())
            if report.closed or report.settlement or report.refitted:
                log.info("worker pass: %s", report)
        except Exception:
            log.exception("worker pass failed; retrying in %.0f s", interval)
        stop.wait(interval)


def start_thread(
    factory: sessionmaker[Session], config: WorkerConfig, *, interval: float, clock: Callable[[], datetime]
) -> tuple[threading.Thread, threading.Event]:
    """The loop in a daemon thread (``gap serve``); set the event to stop it."""
    stop = threading.Event()
    thread = threading.Thread(
        target=run_forever,
        kwargs={"factory": factory, "config": config, "interval": interval, "stop": stop, "clock": clock},
        name="gap-worker",
        daemon=True,
    )
    thread.start()
    return thread, stop
