"""What the operators' dashboard shows: counts, rates, the quality model's view, recent turns, plots.

Only operators behind the admin token see this. Rates here are aggregates over many rounds; nothing
from this module is ever sent to a player. The raw rates come straight from the database; the
model-based figures (player reliability, kept turns at theta, image difficulty) come from
:mod:`gap.quality` fitted on the turns table of :mod:`gap.services.quality`, and are reported as
unavailable, with the reason, when that part cannot run.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import ColumnElement, Integer, case, delete, func, select, true
from sqlalchemy.orm import Session, sessionmaker

from gap.config import Settings
from gap.db.models import GameSession, Image, Player, QualityFit, Round, Turn
from gap.errors import GapError
from gap.game import Pool
from gap.quality import ConvergenceWarning, keep_mask, kept_by_hint
from gap.services.quality import DatabaseFit, fit_database
from gap.services.rounds import fooled_rates

if TYPE_CHECKING:
    from gap.storage import Store

TURNS_PER_DAY_WINDOW = 30


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass(frozen=True)
class Overview:
    """Counts and raw verdict rates, straight from the database."""

    players: int
    players_active_day: int
    sessions: int
    sessions_finished: int
    turns: int
    judged: int
    corrections: int
    images: dict[str, dict[str, int]]
    """``{pool: {"enabled": n, "disabled": n}}``."""
    untainted_judged: int
    untainted_wrong: int
    instructed_judged: int
    instructed_caught: int
    clean_judged: int
    clean_flagged: int

    @property
    def untainted_error_rate(self) -> float | None:
        """Share of untainted answers marked Wrong: the players' view of the model's error rate."""
        return _rate(self.untainted_wrong, self.untainted_judged)

    @property
    def catch_rate(self) -> float | None:
        """Share of instructed-wrong answers the players caught."""
        return _rate(self.instructed_caught, self.instructed_judged)

    @property
    def false_alarm_rate(self) -> float | None:
        """Share of uninstructed answers on tainted images marked Wrong."""
        return _rate(self.clean_flagged, self.clean_judged)


def _count(db: Session, query: Any) -> int:
    return int(db.scalar(query) or 0)


def in_round(column: Any, collection_round: int | None) -> ColumnElement[bool]:
    """``column`` (a ``collection_round`` column) is round ``collection_round``; anything for None
    (all rounds), so every figure below filters by round the way `gap data export --round` does."""
    return true() if collection_round is None else column == collection_round


def overview(db: Session, *, now: datetime, collection_round: int | None = None) -> Overview:
    """The key figures, of round ``collection_round`` of collection only when given (image pools are
    shared by every round and always counted whole)."""
    of_round = in_round(Turn.collection_round, collection_round)
    sessions_of_round = in_round(GameSession.collection_round, collection_round)
    judged = Turn.verdict.is_not(None) & of_round
    wrong = func.sum(case((Turn.verdict == "wrong", 1), else_=0))
    by_kind = db.execute(
        select(Round.pool, Turn.instructed, func.count(), wrong)
        .join(Round, Round.id == Turn.round_id)
        .where(judged)
        .group_by(Round.pool, Turn.instructed)
    ).all()
    tally: Counter[tuple[str, bool, str]] = Counter()
    for pool, instructed, n, n_wrong in by_kind:
        tally[(pool, bool(instructed), "n")] += int(n)
        tally[(pool, bool(instructed), "wrong")] += int(n_wrong or 0)
    images: dict[str, dict[str, int]] = {p.value: {"enabled": 0, "disabled": 0} for p in Pool}
    for pool, enabled, n in db.execute(
        select(Image.pool, Image.enabled, func.count()).group_by(Image.pool, Image.enabled)
    ):
        images.setdefault(pool, {"enabled": 0, "disabled": 0})["enabled" if enabled else "disabled"] += int(n)
    active_players = (
        select(func.count(func.distinct(GameSession.player_id)))
        .join(Round, Round.session_id == GameSession.id)
        .join(Turn, Turn.round_id == Round.id)
        .where(Turn.asked_at >= now - timedelta(days=1), of_round)
    )
    players = (
        select(func.count()).select_from(Player)
        if collection_round is None
        else select(func.count(func.distinct(GameSession.player_id))).where(sessions_of_round)
    )
    untainted, tainted = Pool.UNTAINTED.value, Pool.TAINTED.value
    return Overview(
        players=_count(db, players),
        players_active_day=_count(db, active_players),
        sessions=_count(db, select(func.count()).select_from(GameSession).where(sessions_of_round)),
        sessions_finished=_count(
            db, select(func.count()).where(GameSession.status == "finished", sessions_of_round)
        ),
        turns=_count(db, select(func.count()).select_from(Turn).where(of_round)),
        judged=_count(db, select(func.count()).where(judged)),
        corrections=_count(db, select(func.count()).where(Turn.correction.is_not(None), of_round)),
        images=images,
        untainted_judged=tally[(untainted, False, "n")] + tally[(untainted, True, "n")],
        untainted_wrong=tally[(untainted, False, "wrong")] + tally[(untainted, True, "wrong")],
        instructed_judged=tally[(tainted, True, "n")],
        instructed_caught=tally[(tainted, True, "wrong")],
        clean_judged=tally[(tainted, False, "n")],
        clean_flagged=tally[(tainted, False, "wrong")],
    )


def turns_per_day(
    db: Session, *, now: datetime, days: int = TURNS_PER_DAY_WINDOW, collection_round: int | None = None
) -> list[tuple[date, int]]:
    """Questions asked on each of the last ``days`` UTC days, oldest first, zeros included.

    Bucketed in Python, not with SQL date functions, which differ between SQLite and PostgreSQL in
    how they treat time zones.
    """
    first = (now - timedelta(days=days - 1)).date()
    since = datetime.combine(first, datetime.min.time(), tzinfo=now.tzinfo)
    counts = Counter(
        asked.date()
        for asked in db.scalars(
            select(Turn.asked_at).where(
                Turn.asked_at >= since, in_round(Turn.collection_round, collection_round)
            )
        )
    )
    return [(first + timedelta(days=i), counts.get(first + timedelta(days=i), 0)) for i in range(days)]


@dataclass(frozen=True)
class RecentTurn:
    asked_at: datetime
    player: str
    question: str
    answer: str | None
    verdict: str | None
    correction: str | None


def recent_turns(db: Session, *, limit: int = 20, collection_round: int | None = None) -> list[RecentTurn]:
    """The newest questions, for the live view (no pool and no instruction: see the module doc)."""
    rows = db.execute(
        select(Turn.asked_at, Player.name, Turn.question, Turn.answer, Turn.verdict, Turn.correction)
        .join(Round, Round.id == Turn.round_id)
        .join(GameSession, GameSession.id == Round.session_id)
        .join(Player, Player.id == GameSession.player_id)
        .where(in_round(Turn.collection_round, collection_round))
        .order_by(Turn.asked_at.desc(), Turn.id)
        .limit(limit)
    )
    return [RecentTurn(*row) for row in rows]


@dataclass(frozen=True)
class PlayerRates:
    """A player's raw rates on tainted images: catches of instructed answers and false alarms."""

    player_id: str
    name: str
    instructed: int
    caught: int
    clean: int
    flagged: int

    @property
    def reliability(self) -> float | None:
        """Catch rate minus false-alarm rate: 1 for a perfect judge, 0 for a coin or an always-Wrong."""
        if not self.instructed or not self.clean:
            return None
        return self.caught / self.instructed - self.flagged / self.clean


def player_rates(db: Session) -> list[PlayerRates]:
    wrong = func.sum(case((Turn.verdict == "wrong", 1), else_=0))
    rows = db.execute(
        select(Player.id, Player.name, Turn.instructed, func.count(), wrong)
        .join(GameSession, GameSession.player_id == Player.id)
        .join(Round, Round.session_id == GameSession.id)
        .join(Turn, Turn.round_id == Round.id)
        .where(Round.pool == Pool.TAINTED.value, Turn.verdict.is_not(None))
        .group_by(Player.id, Player.name, Turn.instructed)
    )
    per: dict[str, dict[str, Any]] = {}
    for player_id, name, instructed, n, n_wrong in rows:
        entry = per.setdefault(
            player_id, {"name": name, "instructed": 0, "caught": 0, "clean": 0, "flagged": 0}
        )
        if instructed:
            entry["instructed"] += int(n)
            entry["caught"] += int(n_wrong or 0)
        else:
            entry["clean"] += int(n)
            entry["flagged"] += int(n_wrong or 0)
    return [PlayerRates(player_id=pid, **values) for pid, values in sorted(per.items())]


@dataclass(frozen=True)
class ImageStats:
    image_id: str
    name: str
    pool: str
    enabled: bool
    rounds: int
    judged: int
    wrong: int
    difficulty: float | None = None
    """From the quality model when it ran (higher: mistakes are harder to find); else None."""

    @property
    def wrong_rate(self) -> float | None:
        return _rate(self.wrong, self.judged)


def image_stats(db: Session, *, collection_round: int | None = None) -> list[ImageStats]:
    """Every image with how often it was played and how often its answers were marked Wrong (in
    round ``collection_round`` of collection only, when given)."""
    wrong = func.sum(case((Turn.verdict == "wrong", 1), else_=0))
    turns = (
        select(
            Round.image_id.label("image_id"),
            func.count(Turn.id).label("judged"),
            func.coalesce(wrong, 0).label("wrong"),
        )
        .join(Turn, Turn.round_id == Round.id)
        .where(Turn.verdict.is_not(None), in_round(Turn.collection_round, collection_round))
        .group_by(Round.image_id)
        .subquery()
    )
    rounds = (
        select(Round.image_id.label("image_id"), func.count().label("rounds"))
        .join(GameSession, GameSession.id == Round.session_id)
        .where(in_round(GameSession.collection_round, collection_round))
        .group_by(Round.image_id)
        .subquery()
    )
    rows = db.execute(
        select(
            Image.id,
            Image.original_name,
            Image.pool,
            Image.enabled,
            func.coalesce(rounds.c.rounds, 0),
            func.coalesce(turns.c.judged, 0),
            func.coalesce(turns.c.wrong, 0).cast(Integer),
        )
        .outerjoin(rounds, rounds.c.image_id == Image.id)
        .outerjoin(turns, turns.c.image_id == Image.id)
        .order_by(Image.pool, Image.created_at, Image.original_name)
    )
    return [
        ImageStats(i, name, pool, bool(on), int(r), int(j), int(w)) for i, name, pool, on, r, j, w in rows
    ]


# --- the quality model's view -------------------------------------------------------------------


@dataclass(frozen=True)
class QualityView:
    """The reliability model's figures, or why there are none."""

    available: bool
    note: str = ""
    theta: float = 0.8
    pi: float | None = None
    candidates: int = 0
    kept: int = 0
    reliability: list[float] = field(default_factory=list)
    """Per player: informedness a - b (sensitivity minus false-alarm rate)."""
    candidate_posteriors: list[float] = field(default_factory=list)
    candidate_rounds: list[int | None] = field(default_factory=list)
    """The round of collection of each of ``candidate_posteriors`` (None: before any round)."""
    round_filter: int | None = None
    """Set by :func:`quality_of_round`: the counts are of that round only."""
    difficulty: dict[str, float] = field(default_factory=dict)
    """Per image id: a higher value means mistakes are harder to find there."""
    fooled_by_round: dict[str, list[float]] = field(default_factory=dict)
    """Per round of collection: [kept, untainted questions, rate, low, high] (the model-fooled rate
    with its Wilson 95 % interval, :func:`gap.services.rounds.fooled_rates`)."""
    kept_by_hint: dict[str, list[float]] = field(default_factory=dict)
    """``hinted`` and ``unhinted`` (`GAP_HINTS`): [kept untainted Wrongs, untainted questions]."""
    image_errors: dict[str, list[float]] = field(default_factory=dict)
    """Per untainted image id: [expected real model errors (the sum of P(model wrong) over its judged
    questions), judged questions]; what the `weakest` image policy samples from."""


def fit_quietly(factory: sessionmaker[Session], settings: Settings) -> DatabaseFit | None:
    """:func:`fit_database` without convergence warnings (the view reports the fit as it is)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fit_database(factory, settings)


def quality_view(factory: sessionmaker[Session], settings: Settings) -> QualityView:
    """Fit the reliability model of ``settings`` on every judged turn and report kept turns at its
    theta.

    Cost grows with the number of players and distinct untainted questions: the worker runs it
    (:func:`refresh_quality_fit`) and the dashboard reads the stored result.
    """
    theta = settings.theta
    try:
        fit = fit_quietly(factory, settings)
    except GapError as exc:
        return QualityView(False, f"the reliability model could not be fitted: {exc.message}", theta)
    return view_of_fit(fit, theta=theta)


def view_of_fit(fit: DatabaseFit | None, *, theta: float) -> QualityView:
    """The dashboard's figures from a fit (None: nothing judged yet)."""
    if fit is None:
        return QualityView(True, "no judged turns yet", theta)
    turns, estimator, posterior = fit.turns, fit.estimator, fit.p_wrong
    cand = ((turns["pool"] == Pool.UNTAINTED.value) & (turns["verdict"] == "wrong")).to_numpy()
    kept = keep_mask(turns, posterior, theta)
    players = estimator.players_
    difficulty: dict[str, float] = {}
    if estimator.pi_difficulty_ is not None:
        difficulty = {str(k): float(v) for k, v in estimator.pi_difficulty_.items()}
    elif estimator.pi_image_ is not None:  # a low P(model wrong) on an image: mistakes are hard to find there
        difficulty = {str(k): float(1.0 - v) for k, v in estimator.pi_image_.items()}
    untainted = turns["pool"].to_numpy() == Pool.UNTAINTED.value
    image_errors: dict[str, list[float]] = {}
    untainted_p = np.asarray(posterior)[untainted]
    for image_id, p in zip(turns["image_id"].to_numpy()[untainted], untainted_p, strict=True):
        entry = image_errors.setdefault(str(image_id), [0.0, 0.0])
        entry[0] += float(p)
        entry[1] += 1.0
    return QualityView(
        available=True,
        theta=theta,
        pi=float(estimator.pi_),
        candidates=int(np.sum(cand)),
        kept=int(np.sum(kept)),
        reliability=[float(v) for v in players["informedness"].to_numpy()],
        candidate_posteriors=[float(v) for v in np.asarray(posterior)[cand]],
        candidate_rounds=_rounds_of(turns, cand),
        difficulty=difficulty,
        image_errors=image_errors,
        kept_by_hint={
            name: [row["kept"], row["questions"]] for name, row in kept_by_hint(turns, kept).items()
        },
        fooled_by_round={
            str(n): [r.kept, r.questions, r.rate, r.low, r.high]
            for n, r in (
                fooled_rates(turns, posterior, theta) if "collection_round" in turns.columns else {}
            ).items()
        },
    )


def _rounds_of(turns: Any, mask: Any) -> list[int | None]:
    if "collection_round" not in turns.columns:
        return [None] * int(np.sum(mask))
    values = pd.to_numeric(turns["collection_round"], errors="coerce").to_numpy(dtype=float)[mask]
    return [None if math.isnan(v) else int(v) for v in values]


def quality_of_round(view: QualityView, collection_round: int | None) -> QualityView:
    """``view`` narrowed to one round of collection, as `gap data export --round` narrows: the fit
    stays the one over every round (reliability is a player's, across rounds); candidates and kept
    turns are the round's."""
    if collection_round is None or not view.available:
        return view
    if len(view.candidate_rounds) != len(view.candidate_posteriors):
        return QualityView(
            False,
            "the stored fit predates rounds on the dashboard: the worker's next fit has them",
            view.theta,
        )
    chosen = [
        p
        for p, r in zip(view.candidate_posteriors, view.candidate_rounds, strict=True)
        if r == collection_round
    ]
    fooled = view.fooled_by_round.get(str(collection_round))
    return QualityView(
        **{
            **view.__dict__,
            "candidate_posteriors": chosen,
            "candidate_rounds": [collection_round] * len(chosen),
            "candidates": len(chosen),
            "kept": int(fooled[0]) if fooled else 0,
            "round_filter": collection_round,
        }
    )


def judged_turns(db: Session) -> int:
    return _count(db, select(func.count()).where(Turn.verdict.is_not(None)))


def store_quality_view(db: Session, view: QualityView, *, turns: int, now: datetime) -> None:
    """Keep ``view`` as the newest fit (older rows are dropped: only the newest is ever read)."""
    db.add(QualityFit(created_at=now, turns=turns, summary=json.dumps(view.__dict__)))
    db.flush()
    newest = db.scalar(select(func.max(QualityFit.id)))
    db.execute(delete(QualityFit).where(QualityFit.id < newest))


def latest_quality_fit(db: Session) -> QualityFit | None:
    return db.scalar(select(QualityFit).order_by(QualityFit.created_at.desc(), QualityFit.id.desc()).limit(1))


def stored_quality_view(db: Session, *, theta: float) -> QualityView:
    """The newest fit the worker stored, or why there is none yet."""
    row = latest_quality_fit(db)
    if row is None:
        return QualityView(False, "not fitted yet: the worker (`gap worker` or `gap serve`) fits it", theta)
    known = {f.name for f in fields(QualityView)}  # a row written by an older version may differ
    return QualityView(**{k: v for k, v in json.loads(row.summary).items() if k in known})


def top_images(stats: Sequence[ImageStats], quality: QualityView, *, limit: int = 10) -> list[ImageStats]:
    """Images ranked hardest first: by the quality model's difficulty, else by the fewest Wrongs found.

    Only images with judged turns are ranked; the raw fallback treats the share of answers marked
    Wrong as the ease of finding mistakes there.
    """
    played = [s for s in stats if s.judged]
    if quality.difficulty:
        ranked = [
            ImageStats(**{**s.__dict__, "difficulty": quality.difficulty[s.image_id]})
            for s in played
            if s.image_id in quality.difficulty
        ]
        ranked.sort(key=lambda s: -(s.difficulty or 0.0))
    else:
        ranked = sorted(played, key=lambda s: (s.wrong_rate or 0.0, -s.judged))
    return ranked[:limit]


# --- plots ----------------------------------------------------------------------------------


def _figure(width: float = 6.0, height: float = 2.6) -> Any:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig, fig.add_subplot()


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def plot_turns_per_day(days: Sequence[tuple[date, int]]) -> bytes:
    fig, ax = _figure()
    ax.bar([d for d, _ in days], [n for _, n in days], color="#3454d1", width=0.8)
    ax.set_ylabel("questions")
    ax.set_title("Questions per day (UTC)", fontsize=10)
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def plot_reliability(values: Sequence[float], *, model_based: bool) -> bytes:
    fig, ax = _figure()
    ax.hist(list(values), bins=20, range=(-1.0, 1.0), color="#1b8a4b")
    ax.axvline(0.0, color="#888", linewidth=1, linestyle="--")
    source = "reliability model" if model_based else "raw tainted verdicts"
    ax.set_title(f"Player reliability a - b ({source}, {len(values)} players)", fontsize=10)
    ax.set_xlabel("0: random or always Wrong    1: perfect judge")
    ax.set_ylabel("players")
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def plot_kept(posteriors: Sequence[float], theta: float) -> bytes:
    """Candidate posteriors and the share kept at each theta, with the current theta marked."""
    fig, ax = _figure()
    p = np.sort(np.asarray(posteriors, dtype=float))
    thetas = np.linspace(0.5, 0.99, 50)
    share = 1.0 - np.searchsorted(p, thetas, side="left") / p.size if p.size else np.zeros_like(thetas)
    ax.plot(thetas, share, color="#c8332b")
    ax.axvline(theta, color="#3454d1", linestyle="--", linewidth=1)
    kept = int(np.sum(p >= theta))
    ax.set_title(f"Kept share of Wrong-marked questions vs theta ({kept} kept at {theta:g})", fontsize=10)
    ax.set_xlabel("theta")
    ax.set_ylim(0, 1.02)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def percent(value: float | None) -> str:
    """``0.1234`` -> ``"12.3 %"``; None or NaN -> an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.1f} %"


# --- export ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportSummary:
    """What an export from the dashboard wrote, and what it had to leave out."""

    name: str
    location: str
    """The export's folder, or its ``s3://`` URL."""
    records: int
    kept: int
    missing_references: int


def export_dataset(
    factory: sessionmaker[Session],
    *,
    fmt: str,
    settings: Settings,
    images: Store,
    exports: Store,
    now: datetime,
) -> ExportSummary:
    """Kept turns (at ``settings.theta``) with a reference answer, written as a fine-tuning set in
    ``fmt`` into a folder of ``exports`` (:func:`gap.storage.export_store`), readable by every replica
    when that is object storage.

    Uses :mod:`gap.services.data` like ``gap data`` does: players' corrections become references
    first; kept turns still lacking one are left out and counted (``gap data references`` fills them).
    """
    from gap.data import export_records_to
    from gap.services.data import build_records, kept_turns, store_player_references
    from gap.storage import s3_reader

    theta = settings.theta
    kept = kept_turns(factory, settings)
    store_player_references(factory, kept)
    records, missing = build_records(factory, kept, theta=theta, images=images)
    name = f"{fmt}-{now.strftime('%Y%m%dT%H%M%SZ')}"
    _result, location = export_records_to(
        exports.child(name),
        records,
        fmt=fmt,
        manifest={"source": "gap admin dashboard", "theta": theta, "kept": len(kept)},
        read_object=s3_reader(settings),
    )
    return ExportSummary(name, location, len(records), len(kept), len(missing))
