"""Rounds of collection: which model is in the loop, round by round (Dynabench's rounds).

A round names a model spec (and an optional LoRA adapter). The newest round is the current one: a
session records the round current when it starts and keeps its model to the end, so starting a round
never changes the model under a running session. Every replica reads the current round from the
database when a session starts (no process state), so all switch together. Turns carry their
session's round, so anything exported can be told apart by round.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy.typing as npt
import pandas as pd
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from gap.config import Settings
from gap.db.engine import reading
from gap.db.models import CollectionRound, GameSession, Round, Turn
from gap.errors import InputError
from gap.game import Pool
from gap.models.base import VisionChatModel
from gap.models.factory import ACCEPTED_FORMS
from gap.quality import keep_mask


def start_round(
    db: Session, *, model: str, adapter: str | None, note: str | None, now: datetime
) -> CollectionRound:
    """Open a new round; sessions started from now on use its model."""
    if not model.strip():
        raise InputError("a round needs a model spec, e.g. transformers:<folder> or openai:<name>")
    kind, sep, target = model.strip().partition(":")
    if not (sep and kind in ("transformers", "openai") and target.strip()) and not Path(model).is_dir():
        # Checked now: a bad spec would otherwise fail every answer of the round.
        raise InputError(f"unknown model spec {model!r}: expected {ACCEPTED_FORMS}")
    if adapter and kind == "openai":
        raise InputError("an adapter needs a transformers: model (serve adapters on vLLM as their own model)")
    row = CollectionRound(model=model.strip(), adapter=adapter or None, note=note or None, started_at=now)
    db.add(row)
    db.flush()
    return row


@dataclass(frozen=True)
class RoundStats:
    number: int
    model: str
    adapter: str | None
    note: str | None
    started_at: datetime
    sessions: int
    judged: int
    """Judged turns (questions with a verdict)."""
    untainted_judged: int
    untainted_wrong: int
    """Untainted Wrong verdicts: the candidates the quality filter weighs."""


def round_stats(db: Session) -> list[RoundStats]:
    """Every round, oldest first, with what was collected in it."""
    sessions = dict(
        db.execute(
            select(GameSession.collection_round, func.count()).group_by(GameSession.collection_round)
        ).all()
    )
    untainted = Round.pool == Pool.UNTAINTED.value
    turn_rows = db.execute(
        select(
            Turn.collection_round,
            func.count(),
            func.sum(case((untainted, 1), else_=0)),
            func.sum(case(((untainted) & (Turn.verdict == "wrong"), 1), else_=0)),
        )
        .join(Round, Turn.round_id == Round.id)
        .where(Turn.verdict.is_not(None))
        .group_by(Turn.collection_round)
    ).all()
    turns = {number: (int(n), int(u or 0), int(w or 0)) for number, n, u, w in turn_rows}
    return [
        RoundStats(
            row.id,
            row.model,
            row.adapter,
            row.note,
            row.started_at,
            int(sessions.get(row.id, 0)),
            *turns.get(row.id, (0, 0, 0)),
        )
        for row in db.scalars(select(CollectionRound).order_by(CollectionRound.id))
    ]


def turn_ids_of_round(factory: sessionmaker[Session], number: int) -> set[str]:
    """The ids of the turns collected in round ``number``."""
    with reading(factory) as db:
        return set(db.scalars(select(Turn.id).where(Turn.collection_round == number)))


def turns_of_round(table: pd.DataFrame, number: int) -> pd.DataFrame:
    """The rows of a turns table collected in round ``number`` (its ``collection_round`` column)."""
    if "collection_round" not in table.columns:
        raise InputError(
            "this turns table has no collection_round column; export it again with `gap turns export`"
        )
    return table[pd.to_numeric(table["collection_round"], errors="coerce") == number].reset_index(drop=True)


class RoundModels:
    """Loaded models by (spec, adapter), each loaded once per process on first use. A model still
    answering sessions of an older round stays loaded beside the new round's; loading one never
    blocks answers from the others."""

    def __init__(self, load: Callable[[str, str | None], VisionChatModel]) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._locks: dict[tuple[str, str | None], threading.Lock] = {}
        self._models: dict[tuple[str, str | None], VisionChatModel] = {}

    def get(self, spec: str, adapter: str | None) -> VisionChatModel:
        key = (spec, adapter)
        loaded = self._models.get(key)
        if loaded is not None:
            return loaded
        with self._lock:
            key_lock = self._locks.setdefault(key, threading.Lock())
        with key_lock:
            if key not in self._models:
                self._models[key] = self._load(spec, adapter)
            return self._models[key]


def round_model_loader(
    settings: Settings, configured: Callable[[], VisionChatModel]
) -> Callable[[str, str | None], VisionChatModel]:
    """How a replica loads a round's model: with its own settings (timeouts, server URL) and the
    round's adapter. ``configured`` is the replica's own model (``GAP_MODEL`` + ``GAP_MODEL_ADAPTER``),
    reused when a round names that same spec and adapter rather than loaded twice."""

    def load(spec: str, adapter: str | None) -> VisionChatModel:
        if (spec, adapter) == (settings.model, settings.model_adapter):
            return configured()
        from gap.models.factory import load_ready_model

        return load_ready_model(spec, settings.model_copy(update={"model_adapter": adapter}))

    return load


@dataclass(frozen=True)
class FooledRate:
    """The model-fooled rate of one round: kept untainted Wrongs per untainted question, the
    headline figure of dynamic benchmarks (it should fall from round to round as the model improves)."""

    number: int
    kept: int
    questions: int
    rate: float
    low: float
    high: float
    """Wilson 95 % interval of ``rate``."""


def wilson(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    centre = p + z * z / (2 * trials)
    spread = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    denominator = 1 + z * z / trials
    return max(0.0, (centre - spread) / denominator), min(1.0, (centre + spread) / denominator)


def fooled_rates(turns: pd.DataFrame, p_wrong: npt.ArrayLike, theta: float) -> dict[int, FooledRate]:
    """Per round of collection (column ``collection_round``; turns of no round left out), from one
    reliability fit over every turn: what the filter keeps at ``theta`` over the untainted questions."""
    kept = keep_mask(turns, p_wrong, theta)
    rounds = pd.to_numeric(turns["collection_round"], errors="coerce")
    untainted = (turns["pool"] == Pool.UNTAINTED.value).to_numpy()
    frame = pd.DataFrame({"round": rounds, "kept": kept, "untainted": untainted})[rounds.notna() & untainted]
    rates: dict[int, FooledRate] = {}
    for number, group in frame.groupby("round"):
        k, n = int(group["kept"].sum()), len(group)
        rates[int(number)] = FooledRate(int(number), k, n, k / n, *wilson(k, n))
    return rates
