"""The database side of :mod:`gap.quality`: export judged turns, settle points.

Settlement is the only writer of points. It credits a player's finished sessions in batches, never
one session alone and never an active one (METHOD.md section 5): once the player has
``min_sessions`` unsettled finished sessions, or the oldest of them is ``max_age`` old. Each Wrong
turn of those sessions is priced by the one rule (20 for a caught instructed answer, 0 for a false
alarm on a tainted image, 20 x P(model wrong | verdicts) for an untainted Wrong) and the ledger,
append-only, gets the difference between that price and the turn's lines so far. Re-running adds
only differences, so it is idempotent and never double counts; the player's earlier settled turns
are re-priced with the newest fit in the same batch. Until then every Wrong shows as a pending 20.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from gap.config import Settings
from gap.db.engine import reading, transaction
from gap.db.models import GameSession, PointsEntry, Round, Turn
from gap.errors import InputError
from gap.game.rules import Pool, Verdict, price_of_wrong
from gap.quality import ReliabilityEstimator

TURN_COLUMNS = (
    "turn_id",
    "session_id",
    "player_id",
    "image_id",
    "pool",
    "instructed",
    "verdict",
    "elapsed_s",
    "round_index",
    "question_index",
    "question",
    "collection_round",
    "hinted",
)
_TOLERANCE = 1e-9
SETTLE_LOCK_KEY = 0x6761_7073  # "gaps": the advisory lock every settlement takes on PostgreSQL


def export_turns(factory: sessionmaker[Session], *, collection_round: int | None = None) -> pd.DataFrame:
    """Every judged turn as a turns table (``gap.quality``'s input), oldest session first.

    ``pool`` is the round's pool, ``round_index`` the image's 1-based place in the session,
    ``question_index`` the turn's 1-based place in the round, ``collection_round`` the round of
    collection (`gap rounds`; empty before any), ``hinted`` 1 when the question was the round's hint
    (`GAP_HINTS`). Turns still awaiting a verdict are left out; ``collection_round`` keeps only that
    round's.
    """
    stmt = (
        select(
            Turn.id,
            GameSession.id,
            GameSession.player_id,
            Round.image_id,
            Round.pool,
            Turn.instructed,
            Turn.verdict,
            Turn.elapsed_s,
            Round.index,
            Turn.index,
            Turn.question,
            Turn.collection_round,
            Turn.hinted,
        )
        .join(Round, Turn.round_id == Round.id)
        .join(GameSession, Round.session_id == GameSession.id)
        .where(Turn.verdict.is_not(None))
        .order_by(GameSession.created_at, GameSession.id, Round.index, Turn.index)
    )
    if collection_round is not None:
        stmt = stmt.where(Turn.collection_round == collection_round)
    with reading(factory) as db:
        rows = db.execute(stmt).all()
    frame = pd.DataFrame([tuple(r) for r in rows], columns=list(TURN_COLUMNS))
    return frame.astype(
        {
            "turn_id": str,
            "session_id": str,
            "player_id": str,
            "image_id": str,
            "pool": str,
            "instructed": np.int8,
            "verdict": str,
            "elapsed_s": np.float64,
            "round_index": np.int64,
            "question_index": np.int64,
            "question": str,
            "collection_round": "Int64",
            "hinted": np.int8,
        }
    )


@dataclass(frozen=True)
class DatabaseFit:
    """The reliability model fitted on every judged turn in the database."""

    turns: pd.DataFrame
    estimator: ReliabilityEstimator
    p_wrong: np.ndarray[Any, np.dtype[np.float64]]
    """P(model wrong | verdicts), row by row of ``turns``."""


def reliability_estimator(settings: Settings) -> ReliabilityEstimator:
    """The estimator of the ``GAP_QUALITY_*`` settings: the one every consumer fits (``gap quality
    fit``, the dashboard, settlement, ``gap data export``), so their kept sets never differ."""
    return ReliabilityEstimator(
        epsilon=settings.quality_epsilon,
        delta=settings.quality_delta,
        prior=settings.quality_prior,
        pi_by=settings.quality_pi_by,
        group_questions=settings.quality_group,
    )


def fit_database(factory: sessionmaker[Session], settings: Settings) -> DatabaseFit | None:
    """Export the judged turns and fit :func:`reliability_estimator` on all of them (tainted turns
    teach it how reliable each player is); None when nothing has been judged yet."""
    turns = export_turns(factory)
    if turns.empty:
        return None
    estimator = reliability_estimator(settings)
    return DatabaseFit(turns, estimator, estimator.fit_predict_proba(turns))


@dataclass(frozen=True, slots=True)
class SettlePolicy:
    """When a player's finished sessions are due for settlement (``GAP_SETTLE_*``)."""

    min_sessions: int = 3
    max_age: timedelta = timedelta(days=1)

    def __post_init__(self) -> None:
        if self.min_sessions < 1:
            raise ValueError(f"min_sessions must be >= 1, got {self.min_sessions}")


@dataclass(frozen=True, slots=True)
class SettleSummary:
    """What a settlement did."""

    players: int
    """Players whose sessions were credited."""
    sessions: int
    """Sessions credited (marked settled)."""
    candidates: int
    """Wrong turns priced: those of the credited sessions and the same players' earlier ones."""
    settled: int
    """Of those, turns with a posterior, hence a price."""
    adjusted: int
    """Ledger lines inserted (turns whose total moved by >= 1e-9)."""
    missing: int
    """Candidates without a posterior (judged after the fit); their player waits."""
    change: float
    """Sum of the inserted amounts."""


def due_sessions(db: Session, policy: SettlePolicy, now: datetime) -> dict[str, list[str]]:
    """Unsettled finished sessions of the players that are due, by player id."""
    rows = db.execute(
        select(GameSession.player_id, GameSession.id, GameSession.finished_at, GameSession.created_at).where(
            GameSession.status == "finished", GameSession.settled_at.is_(None)
        )
    ).all()
    per: dict[str, list[tuple[str, datetime]]] = {}
    for player_id, session_id, finished_at, created_at in rows:
        per.setdefault(player_id, []).append((session_id, finished_at or created_at))
    return {
        player: [sid for sid, _ in sessions]
        for player, sessions in per.items()
        if len(sessions) >= policy.min_sessions or min(f for _, f in sessions) <= now - policy.max_age
    }


def _posteriors(result: pd.DataFrame | Mapping[str, float]) -> pd.Series:
    if isinstance(result, pd.DataFrame):
        missing = [c for c in ("turn_id", "p_wrong") if c not in result.columns]
        if missing:
            raise InputError(f"the quality result needs columns turn_id and p_wrong; missing {missing}")
        series = pd.Series(result["p_wrong"].to_numpy(dtype=np.float64), index=result["turn_id"].astype(str))
    else:
        series = pd.Series({str(k): float(v) for k, v in result.items()}, dtype=np.float64)
    bad = ~np.isfinite(series.to_numpy()) | (series.to_numpy() < 0) | (series.to_numpy() > 1)
    if bad.any():
        turn = series.index[int(np.flatnonzero(bad)[0])]
        raise InputError(f"p_wrong must be in [0, 1]; turn {turn} has {series[turn]!r}")
    if series.index.has_duplicates:
        raise InputError(f"turn {series.index[series.index.duplicated()][0]} appears twice in the result")
    return series


def _price(pool: str, instructed: bool, p_wrong: float) -> float:
    """:func:`gap.game.price_of_wrong`, or NaN for a turn the fit has not seen, whatever its pool,
    so whether a batch waits for the next fit never depends on the pools in it."""
    return float("nan") if np.isnan(p_wrong) else price_of_wrong(Pool(pool), instructed, p_wrong)


def settle_points(
    factory: sessionmaker[Session],
    result: pd.DataFrame | Mapping[str, float],
    *,
    policy: SettlePolicy | None = None,
    now: datetime | None = None,
    dry_run: bool = False,
) -> SettleSummary:
    """Credit the due players' finished sessions, in one transaction.

    ``result`` maps turn ids to P(model wrong | verdicts): a frame with ``turn_id`` and ``p_wrong``
    (``gap quality fit``'s turns table) or a mapping. A due player with a Wrong turn it does not
    cover (judged after the fit) waits for the next run. With ``dry_run`` nothing is written.
    """
    posterior = _posteriors(result)
    policy = policy or SettlePolicy()
    stamp = now or datetime.now(UTC)
    with transaction(factory) as db:
        if db.get_bind().dialect.name == "postgresql":
            # Two settlements at once would both read the old totals and both add the difference;
            # SQLite's BEGIN IMMEDIATE already serialises them, PostgreSQL needs a lock.
            db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SETTLE_LOCK_KEY})
        due = due_sessions(db, policy, stamp)
        rows = _wrong_turns(db, list(due))
        p = posterior.reindex(rows["turn_id"].astype(str)).to_numpy()
        price = np.array(
            [
                _price(pool, bool(i), float(v))
                for pool, i, v in zip(rows["pool"], rows["instructed"], p, strict=True)
            ],
            dtype=np.float64,
        )
        waiting = set(rows.loc[np.isnan(price), "player_id"])
        credited = {player: sessions for player, sessions in due.items() if player not in waiting}
        ready = rows["player_id"].isin(list(credited)).to_numpy() & ~np.isnan(price)
        diff = np.where(ready, price - rows["total"].to_numpy(dtype=np.float64), 0.0)
        move = ready & (np.abs(diff) >= _TOLERANCE)
        lines = [
            {
                "player_id": row.player_id,
                "session_id": row.session_id,
                "turn_id": row.turn_id,
                "kind": "catch" if row.pool == Pool.TAINTED.value else "settlement",
                "amount": float(d),
                "created_at": stamp,
            }
            for row, d in zip(rows[move].itertuples(index=False), diff[move], strict=True)
        ]
        sessions = [sid for group in credited.values() for sid in group]
        if not dry_run:
            if lines:
                db.execute(insert(PointsEntry), lines)
            if sessions:
                db.execute(
                    update(GameSession)
                    .where(GameSession.id.in_(sessions), GameSession.settled_at.is_(None))
                    .values(settled_at=stamp)
                )
    return SettleSummary(
        players=len(credited),
        sessions=len(sessions),
        candidates=len(rows),
        settled=int((~np.isnan(price)).sum()),
        adjusted=len(lines),
        missing=int(np.isnan(price).sum()),
        change=float(diff[move].sum()),
    )


def _wrong_turns(db: Session, players: list[str]) -> pd.DataFrame:
    """Every Wrong turn of these players' finished sessions, with the turn's ledger total so far."""
    columns = ["turn_id", "player_id", "session_id", "pool", "instructed", "total"]
    if not players:
        return pd.DataFrame(columns=columns)
    current = (
        select(PointsEntry.turn_id, func.sum(PointsEntry.amount).label("total"))
        .group_by(PointsEntry.turn_id)
        .subquery()
    )
    stmt = (
        select(
            Turn.id,
            GameSession.player_id,
            GameSession.id,
            Round.pool,
            Turn.instructed,
            func.coalesce(current.c.total, 0.0),
        )
        .join(Round, Turn.round_id == Round.id)
        .join(GameSession, Round.session_id == GameSession.id)
        .outerjoin(current, current.c.turn_id == Turn.id)
        .where(
            GameSession.player_id.in_(players),
            GameSession.status == "finished",
            Turn.verdict == Verdict.WRONG.value,
        )
    )
    return pd.DataFrame([tuple(r) for r in db.execute(stmt).all()], columns=columns)
