"""Rounds of collection: which model is in the loop, round by round (Dynabench's rounds).

A round names a model spec (and an optional LoRA adapter). The newest round is the current one: a
session records the round current when it starts and keeps its model to the end, so starting a round
never changes the model under a running session. Every replica reads the current round from the
database when a session starts (no process state), so all switch together. Turns carry their
session's round, so anything exported can be told apart by round.
"""

from __future__ import annotations

import gc
import logging
import math
import sys
import threading
from collections import OrderedDict
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

log = logging.getLogger(__name__)


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


ModelKey = tuple[str, str | None]
"""(spec, adapter) of a round's model."""


class RoundModels:
    """Loaded round models by (spec, adapter), at most ``capacity`` per process.

    A model still answering sessions of an older round stays loaded beside the new round's (the
    default capacity, 2: the current round's and the previous one's); loading one never blocks
    answers from the others. Past the capacity the least recently used model goes, preferring those
    no active session needs (``in_use``); a session whose model went reloads it on its next
    question. :meth:`warm` loads a model in the background (one load at a time), so the first
    question of a new round does not pay for it.
    """

    def __init__(
        self,
        load: Callable[[str, str | None], VisionChatModel],
        *,
        capacity: int = 2,
        in_use: Callable[[], set[ModelKey]] | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._load = load
        self.capacity = capacity
        self._in_use = in_use
        self._lock = threading.Lock()
        self._locks: dict[ModelKey, threading.Lock] = {}
        self._models: OrderedDict[ModelKey, VisionChatModel] = OrderedDict()  # least recently used first
        self._warming: set[ModelKey] = set()
        self._warm_lock = threading.Lock()  # one background load at a time

    @property
    def loaded(self) -> list[ModelKey]:
        """The models loaded now, least recently used first."""
        with self._lock:
            return list(self._models)

    @property
    def warming(self) -> list[ModelKey]:
        """The models being loaded in the background now."""
        with self._lock:
            return sorted(self._warming, key=str)

    def get(self, spec: str, adapter: str | None) -> VisionChatModel:
        key = (spec, adapter)
        with self._lock:
            loaded = self._models.get(key)
            if loaded is not None:
                self._models.move_to_end(key)
                return loaded
            key_lock = self._locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._models:
                    self._models.move_to_end(key)
                    return self._models[key]
            model = self._load(spec, adapter)
            evicted = self._admit(key, model)
        for old in evicted:
            _release(old)
        return model

    def warm(self, spec: str, adapter: str | None) -> threading.Thread | None:
        """Load this model in a background thread unless it is loaded or already being loaded; the
        thread (to join in tests) or None. A failed load is logged; a question would retry it."""
        key = (spec, adapter)
        with self._lock:
            if key in self._models or key in self._warming:
                return None
            self._warming.add(key)

        def run() -> None:
            try:
                with self._warm_lock:
                    self.get(spec, adapter)
            except Exception:
                log.exception("warming the model %s (adapter %s) failed", spec, adapter)
            finally:
                with self._lock:
                    self._warming.discard(key)

        thread = threading.Thread(target=run, name="gap-model-warm", daemon=True)
        thread.start()
        return thread

    def _admit(self, key: ModelKey, model: VisionChatModel) -> list[VisionChatModel]:
        """Store ``model``; the models it pushed out of the cache."""
        needed = self._in_use() if self._in_use is not None and len(self._models) >= self.capacity else set()
        with self._lock:
            self._models[key] = model
            evicted: list[VisionChatModel] = []
            while len(self._models) > self.capacity:
                candidates = [k for k in self._models if k != key]
                victim = next((k for k in candidates if k not in needed), candidates[0])
                log.info("unloading the model %s (adapter %s): over GAP_MODEL_CACHE_SIZE", *victim)
                evicted.append(self._models.pop(victim))
            return evicted


def _release(model: VisionChatModel) -> None:
    """Let an evicted model's memory go: its threads stopped (``unload``, where a backend has one),
    references dropped, CUDA's cache emptied. A caller still holding it may go on using it."""
    unload = getattr(model, "unload", None)
    if callable(unload):
        unload()
    gc.collect()  # a backend's threads may hold it in a cycle
    torch = sys.modules.get("torch")  # only a process that loaded a local model has CUDA memory to free
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def models_in_use(factory: sessionmaker[Session]) -> set[ModelKey]:
    """The (spec, adapter) of every round an active session is playing."""
    with reading(factory) as db:
        rows = db.execute(
            select(CollectionRound.model, CollectionRound.adapter)
            .join(GameSession, GameSession.collection_round == CollectionRound.id)
            .where(GameSession.status == "active")
            .distinct()
        ).all()
    return {(model, adapter) for model, adapter in rows}


def current_round_model(factory: sessionmaker[Session]) -> ModelKey | None:
    """The (spec, adapter) of the current (newest) round; None before the first round."""
    with reading(factory) as db:
        newest = select(CollectionRound.model, CollectionRound.adapter).order_by(CollectionRound.id.desc())
        row = db.execute(newest.limit(1)).first()
    return None if row is None else (row[0], row[1])


def watch_rounds(
    factory: sessionmaker[Session], models: RoundModels, interval: float, stop: threading.Event
) -> threading.Thread:
    """A thread that reads the current round every ``interval`` seconds and warms its model, so a
    replica has the new round's model loaded before its first question (issue 14, 12)."""

    def run() -> None:
        while True:
            try:
                current = current_round_model(factory)
                if current is not None:
                    models.warm(*current)
            except Exception:  # a database hiccup: try again next time
                log.warning("could not read the current round", exc_info=True)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=run, name="gap-round-watch", daemon=True)
    thread.start()
    return thread


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
