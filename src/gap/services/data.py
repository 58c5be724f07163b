"""From the game's database to fine-tuning records: kept turns, their reference answers, records.

Kept turns come from the quality model (untainted Wrong verdicts whose posterior P(model wrong) is at
least theta). Their reference answers live in the ``reference_answers`` table: the player's own
correction when given, otherwise one written by a reference VLM. Filling is resumable: a turn whose
row has text is never asked again, and a failed row keeps its attempts and last error.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from gap.config import Settings
from gap.data._records import Message, Provenance, Record, strip_image_tokens
from gap.data._references import PROMPT_VERSION, ReferenceJob, ReferenceOutcome, run_reference_jobs
from gap.db.engine import reading, transaction
from gap.db.models import ReferenceAnswer, Round, Turn
from gap.errors import ConfigError
from gap.models.base import ChatMessage, VisionChatModel
from gap.quality import keep_mask
from gap.services.game import utcnow
from gap.services.quality import fit_database
from gap.storage import Store

RECORD_SOURCE = "gap"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


# --- which turns are kept ---------------------------------------------------------------------


def kept_turns(
    factory: sessionmaker[Session], settings: Settings, *, theta: float | None = None
) -> dict[str, float]:
    """``{turn_id: posterior}`` of the untainted Wrong turns with P(model wrong | verdicts) >= theta
    (default ``settings.theta``).

    The reliability model of ``settings`` is fitted on every judged turn in the database (tainted
    ones teach it how reliable each player is), as :mod:`gap.quality` describes.
    """
    fit = fit_database(factory, settings)
    if fit is None:
        return {}
    mask = keep_mask(fit.turns, fit.p_wrong, settings.theta if theta is None else theta)
    ids = fit.turns["turn_id"].astype(str).to_numpy()
    return {str(ids[i]): float(fit.p_wrong[i]) for i in range(len(ids)) if mask[i]}


# --- reference answers ------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceReport:
    """What one ``gap data references`` run did."""

    kept: int
    already: int
    from_players: int
    asked: int
    answered: int
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return len(self.failures)


def _load_turns(db: Session, turn_ids: Collection[str]) -> list[Turn]:
    if not turn_ids:
        return []
    query = (
        select(Turn)
        .where(Turn.id.in_(list(turn_ids)))
        .options(
            selectinload(Turn.round).selectinload(Round.turns),
            selectinload(Turn.round).selectinload(Round.image),
            selectinload(Turn.round).selectinload(Round.session),
        )
    )
    return sorted(db.scalars(query), key=lambda t: t.id)


def _references(db: Session, turn_ids: Collection[str]) -> dict[str, ReferenceAnswer]:
    if not turn_ids:
        return {}
    rows = db.scalars(select(ReferenceAnswer).where(ReferenceAnswer.turn_id.in_(list(turn_ids))))
    return {row.turn_id: row for row in rows}


def _history(turn: Turn) -> list[Turn]:
    """The round's turns up to and including ``turn``, in order."""
    return [t for t in sorted(turn.round.turns, key=lambda t: t.index) if t.index <= turn.index]


def _job(turn: Turn, images: Store) -> ReferenceJob:
    messages: list[ChatMessage] = []
    for earlier in _history(turn)[:-1]:
        messages.append(ChatMessage("user", strip_image_tokens(earlier.question)))
        messages.append(ChatMessage("assistant", strip_image_tokens(earlier.answer or "")))
    messages.append(ChatMessage("user", strip_image_tokens(turn.question)))
    image = turn.round.image
    return ReferenceJob(
        turn_id=turn.id,
        image=images.url(image.path),
        read=functools.partial(images.get, image.path),
        mime_type=image.mime_type,
        messages=tuple(messages),
        wrong_answer=turn.answer,
    )


def store_player_references(factory: sessionmaker[Session], turn_ids: Collection[str]) -> int:
    """Record the players' own corrections as references (first choice); returns how many were new."""
    now, added = utcnow(), 0
    with transaction(factory) as db:
        existing = _references(db, turn_ids)
        for turn in _load_turns(db, turn_ids):
            correction = (turn.correction or "").strip()
            row = existing.get(turn.id)
            if not correction or (row is not None and row.text):
                continue
            if row is None:
                row = ReferenceAnswer(turn_id=turn.id, created_at=now, attempts=0)
                db.add(row)
            row.text, row.source, row.model, row.prompt_version = correction, "player", None, None
            row.last_error, row.updated_at = None, now
            added += 1
    return added


def pending_jobs(
    factory: sessionmaker[Session], turn_ids: Collection[str], *, images: Store
) -> tuple[list[ReferenceJob], int]:
    """Jobs for the kept turns that still have no reference text, and how many already have one."""
    with reading(factory) as db:
        existing = _references(db, turn_ids)
        done = sum(1 for row in existing.values() if row.text)
        jobs = [
            _job(turn, images)
            for turn in _load_turns(db, turn_ids)
            if not (turn.id in existing and existing[turn.id].text)
        ]
    return jobs, done


def save_outcome(factory: sessionmaker[Session], outcome: ReferenceOutcome, *, model_name: str) -> None:
    """Persist one outcome at once: an answer, or the failed attempts and the last error."""
    now = utcnow()
    with transaction(factory) as db:
        row = db.scalar(select(ReferenceAnswer).where(ReferenceAnswer.turn_id == outcome.turn_id))
        if row is None:
            row = ReferenceAnswer(turn_id=outcome.turn_id, created_at=now, attempts=0, source="model")
            db.add(row)
        if row.text:  # written meanwhile (a player correction or a parallel run): keep it
            return
        row.source, row.model, row.prompt_version = "model", model_name, PROMPT_VERSION
        row.attempts = (row.attempts or 0) + outcome.attempts
        row.text, row.last_error, row.updated_at = outcome.text, outcome.error, now


def fill_references(
    factory: sessionmaker[Session],
    model: VisionChatModel | None,
    turn_ids: Collection[str],
    *,
    images: Store,
    concurrency: int = 4,
    retries: int = 2,
    backoff: float = 1.0,
    limit: int | None = None,
    show_progress: bool = False,
) -> ReferenceReport:
    """Give every kept turn a reference answer: the player's correction, else the reference model's.

    Each model outcome is stored as it arrives. ``limit`` caps how many questions this run asks.
    ``model`` may be None when every kept turn already has an answer; otherwise that is a
    :class:`ConfigError`.
    """
    from_players = store_player_references(factory, turn_ids)
    jobs, done = pending_jobs(factory, turn_ids, images=images)
    if limit is not None:
        jobs = jobs[:limit]
    if jobs and model is None:
        raise ConfigError(
            f"{len(jobs)} kept turn(s) need a reference model: set --model and --base-url "
            "(or GAP_REFERENCE_MODEL and GAP_REFERENCE_BASE_URL)"
        )
    if model is None:
        return ReferenceReport(len(turn_ids), done - from_players, from_players, 0, 0)
    outcomes = run_reference_jobs(
        model,
        jobs,
        on_outcome=lambda outcome: save_outcome(factory, outcome, model_name=model.name),
        concurrency=concurrency,
        retries=retries,
        backoff=backoff,
        show_progress=show_progress,
    )
    return ReferenceReport(
        kept=len(turn_ids),
        already=done - from_players,
        from_players=from_players,
        asked=len(jobs),
        answered=sum(1 for o in outcomes if o.ok),
        failures={o.turn_id: o.error or "?" for o in outcomes if not o.ok},
    )


# --- records ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reference:
    text: str
    source: Literal["player", "model"]
    model: str | None
    prompt: str | None
    at: datetime | None


def _reference_for(turn: Turn, row: ReferenceAnswer | None) -> _Reference | None:
    """The stored reference, else the player's correction (usable before `gap data references` runs)."""
    if row is not None and (row.text or "").strip():
        source: Literal["player", "model"] = "player" if row.source == "player" else "model"
        return _Reference(row.text or "", source, row.model, row.prompt_version, row.updated_at)
    correction = (turn.correction or "").strip()
    if correction:
        return _Reference(correction, "player", None, None, turn.judged_at)
    return None


def _record(turn: Turn, ref: _Reference, posterior: float, theta: float, images: Store) -> Record:
    messages: list[Message] = []
    for earlier in _history(turn)[:-1]:
        messages.append(Message("user", strip_image_tokens(earlier.question)))
        messages.append(Message("assistant", strip_image_tokens(earlier.answer or "")))
    messages.append(Message("user", strip_image_tokens(turn.question)))
    messages.append(Message("assistant", strip_image_tokens(ref.text)))
    rnd = turn.round
    provenance = Provenance(
        source=RECORD_SOURCE,
        players=(rnd.session.player_id,),
        posterior=posterior,
        theta=theta,
        model=turn.model,
        reference_source=ref.source,
        reference_model=ref.model,
        reference_prompt=ref.prompt,
        asked_at=_iso(turn.asked_at),
        judged_at=_iso(turn.judged_at),
        referenced_at=_iso(ref.at),
        turn_ids=(turn.id,),
        hinted=turn.hinted,
    )
    return Record(
        id=turn.id,
        image=images.url(rnd.image.path),
        image_id=rnd.image_id,
        messages=tuple(messages),
        provenance=provenance,
        rejected=turn.answer,
    )


def build_records(
    factory: sessionmaker[Session], kept: Mapping[str, float], *, theta: float, images: Store
) -> tuple[list[Record], list[str]]:
    """Records for the kept turns that have a reference answer, and the ids of those that have none.

    Each record's image is where ``images`` keeps it (a local path, or an ``s3://`` URL). A player's
    correction counts even before ``gap data references`` has stored it. Records come in a
    stable order (by time asked, then id), so exports are reproducible.
    """
    with reading(factory) as db:
        refs = _references(db, kept)
        turns = _load_turns(db, kept)
        records: list[Record] = []
        missing: list[str] = []
        for turn in sorted(turns, key=lambda t: (t.asked_at, t.id)):
            ref = _reference_for(turn, refs.get(turn.id))
            if ref is None:
                missing.append(turn.id)
                continue
            records.append(_record(turn, ref, kept[turn.id], theta, images))
    return records, missing


def reference_status(factory: sessionmaker[Session], turn_ids: Sequence[str]) -> dict[str, int]:
    """Counts of kept turns by reference state: ``player``, ``model``, ``failed``, ``missing``."""
    with reading(factory) as db:
        refs = _references(db, turn_ids)
    counts = {"player": 0, "model": 0, "failed": 0, "missing": 0}
    for turn_id in turn_ids:
        row = refs.get(turn_id)
        if row is None:
            counts["missing"] += 1
        elif row.text:
            counts["player" if row.source == "player" else "model"] += 1
        else:
            counts["failed"] += 1
    return counts
