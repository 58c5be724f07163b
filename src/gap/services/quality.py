"""The database side of :mod:`gap.quality`: export judged turns, settle untainted points.

Settlement keeps the points ledger append-only: for every untainted Wrong turn it adds one
``settlement`` line so that the turn's ``provisional`` + ``settlement`` lines sum to
20 x P(model wrong | verdicts). Re-running after new data adds only the difference, so it is
idempotent and never double counts; leaderboards, which sum the ledger, follow automatically.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import func, insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from gap.db.engine import reading, transaction
from gap.db.models import GameSession, PointsEntry, Round, Turn
from gap.errors import InputError
from gap.game.rules import Pool, Verdict, settled_amount
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
)
SETTLED_KINDS = ("provisional", "settlement")
_TOLERANCE = 1e-9
SETTLE_LOCK_KEY = 0x6761_7073  # "gaps": the advisory lock every settlement takes on PostgreSQL


def export_turns(factory: sessionmaker[Session]) -> pd.DataFrame:
    """Every judged turn as a turns table (``gap.quality``'s input), oldest session first.

    ``pool`` is the round's pool, ``round_index`` the image's 1-based place in the session,
    ``question_index`` the turn's 1-based place in the round. Turns still awaiting a verdict are left
    out.
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
        )
        .join(Round, Turn.round_id == Round.id)
        .join(GameSession, Round.session_id == GameSession.id)
        .where(Turn.verdict.is_not(None))
        .order_by(GameSession.created_at, GameSession.id, Round.index, Turn.index)
    )
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
        }
    )


@dataclass(frozen=True)
class DatabaseFit:
    """The reliability model fitted on every judged turn in the database."""

    turns: pd.DataFrame
    estimator: ReliabilityEstimator
    p_wrong: np.ndarray[Any, np.dtype[np.float64]]
    """P(model wrong | verdicts), row by row of ``turns``."""


def fit_database(factory: sessionmaker[Session]) -> DatabaseFit | None:
    """Export the judged turns and fit the reliability model on all of them (tainted turns teach it
    how reliable each player is); None when nothing has been judged yet."""
    turns = export_turns(factory)
    if turns.empty:
        return None
    estimator = ReliabilityEstimator()
    return DatabaseFit(turns, estimator, estimator.fit_predict_proba(turns))


@dataclass(frozen=True, slots=True)
class SettleSummary:
    """What a settlement did."""

    candidates: int
    """Untainted Wrong turns in the database."""
    settled: int
    """Of those, turns with a posterior (now worth 20 x posterior)."""
    adjusted: int
    """Settlement lines inserted (turns whose total moved by >= 1e-9)."""
    missing: int
    """Candidates without a posterior (judged after the fit); left as they were."""
    change: float
    """Sum of the inserted amounts (negative when settling lowers points)."""


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


def settle_points(
    factory: sessionmaker[Session],
    result: pd.DataFrame | Mapping[str, float],
    *,
    now: datetime | None = None,
    dry_run: bool = False,
) -> SettleSummary:
    """Bring every untainted Wrong turn's ledger total to 20 x its posterior, in one transaction.

    ``result`` maps turn ids to P(model wrong | verdicts): a frame with ``turn_id`` and ``p_wrong``
    (``gap quality fit``'s turns table) or a mapping. Turns it does not cover are left untouched.
    With ``dry_run`` nothing is written.
    """
    posterior = _posteriors(result)
    stamp = now or datetime.now(UTC)
    current = (
        select(PointsEntry.turn_id, func.sum(PointsEntry.amount).label("total"))
        .where(PointsEntry.kind.in_(SETTLED_KINDS))
        .group_by(PointsEntry.turn_id)
        .subquery()
    )
    stmt = (
        select(Turn.id, GameSession.player_id, GameSession.id, func.coalesce(current.c.total, 0.0))
        .join(Round, Turn.round_id == Round.id)
        .join(GameSession, Round.session_id == GameSession.id)
        .outerjoin(current, current.c.turn_id == Turn.id)
        .where(Round.pool == Pool.UNTAINTED.value, Turn.verdict == Verdict.WRONG.value)
    )
    with transaction(factory) as db:
        if db.get_bind().dialect.name == "postgresql":
            # Two settlements at once would both read the old totals and both add the difference;
            # SQLite's BEGIN IMMEDIATE already serialises them, PostgreSQL needs a lock.
            db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SETTLE_LOCK_KEY})
        rows = pd.DataFrame(
            [tuple(r) for r in db.execute(stmt).all()],
            columns=["turn_id", "player_id", "session_id", "total"],
        )
        p = posterior.reindex(rows["turn_id"].astype(str)).to_numpy()
        has = ~np.isnan(p)
        target = np.array([settled_amount(float(v)) for v in p[has]])  # the one rule, 20 x posterior
        diff = np.zeros(len(rows))
        diff[has] = target - rows["total"].to_numpy(dtype=np.float64)[has]
        move = has & (np.abs(diff) >= _TOLERANCE)
        lines = [
            {
                "player_id": row.player_id,
                "session_id": row.session_id,
                "turn_id": row.turn_id,
                "kind": "settlement",
                "amount": float(d),
                "created_at": stamp,
            }
            for row, d in zip(rows[move].itertuples(index=False), diff[move], strict=True)
        ]
        if lines and not dry_run:
            db.execute(insert(PointsEntry), lines)
    return SettleSummary(
        candidates=len(rows),
        settled=int(has.sum()),
        adjusted=len(lines),
        missing=int((~has).sum()),
        change=float(diff[move].sum()),
    )
