"""Question hints (`GAP_HINTS`): a stuck player may ask, once per round, for a suggested question.

The reference model (`GAP_REFERENCE_MODEL` on `GAP_REFERENCE_BASE_URL`) writes it from the image;
without one, the game's own model does. Either way the request is the image and :data:`HINT_PROMPT`,
nothing else: no system prompt, no clause, no history, so it is byte for byte the same request for a
tainted and an untainted round, and what the player gets back (its text aside) and how long it takes
cannot depend on the round's pool. The first request claims the round (a ``round_hints`` row with
no text yet), so a double tap asks the model once; the hint is stored, later requests get it back,
and a failure releases the claim so the player can try again. It runs through a
:class:`~gap.models.gate.ModelGate`, under the game's model time-out.

A question asked in the round whose text is the hint (:func:`gap._text.normalise_question`) is
marked ``hinted`` on its turn (:meth:`gap.db.models.RoundHint.matches`); an edited hint is the
player's own question.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import anyio.to_thread
from sqlalchemy import CursorResult, delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gap._text import clean_text
from gap.config import Settings
from gap.db.engine import transaction
from gap.db.models import CollectionRound, Round, RoundHint
from gap.errors import Conflict, GapError, ModelError, NotFound, RoundOver
from gap.models.base import ChatMessage, ImageInput
from gap.models.gate import ModelGate, model_gate
from gap.services.game import (
    STALE_TURN_MARGIN_S,
    GameContext,
    advance_rounds,
    credited_deadline,
    owned_round,
    player_facing_error,
    round_model,
)

HINT_PROMPT = (
    "Suggest one short question about this image that someone could ask to test whether an AI "
    "really sees it: about a count, a colour, a position, some text, or whether something is there. "
    "It must be answerable from the image alone. Reply with the question only, nothing else."
)
_PREFIXES = ("question:", "q:", "- ", "* ")
_QUOTES = "\"'`“”‘’"


def clean_hint(text: str, max_chars: int) -> str:
    """The first line of the model's reply without quotes or a "Question:" label, at most
    ``max_chars`` characters (cut at a word), so the player can ask it as it is."""
    line = next((part.strip() for part in clean_text(text).splitlines() if part.strip()), "")
    for prefix in _PREFIXES:
        if line.lower().startswith(prefix):
            line = line[len(prefix) :].strip()
    line = line.strip(_QUOTES).strip()
    if len(line) > max_chars:
        line = line[:max_chars].rsplit(" ", 1)[0].rstrip() or line[:max_chars]
    if not line:
        raise ModelError("the model's hint was empty")
    return line


@dataclass(frozen=True)
class Hints:
    """What hints need: the game (rounds, clock, images) and the gate of the model that writes them."""

    game: GameContext
    gate: ModelGate
    max_chars: int

    @property
    def stale_after(self) -> timedelta:
        """A claim older than this was lost with its process: the next request takes it over."""
        return timedelta(seconds=self.gate.timeout + STALE_TURN_MARGIN_S)


def hints_for(settings: Settings, game: GameContext) -> Hints | None:
    """The hints of ``settings`` (None when `GAP_HINTS` is off): the reference endpoint's model behind
    its own gate when `GAP_REFERENCE_MODEL` and `GAP_REFERENCE_BASE_URL` are set, else the game's gate."""
    if not settings.hints:
        return None
    gate = game.gate
    if settings.reference_model and settings.reference_base_url:
        from gap.models.openai_backend import OpenAIModel

        reference = OpenAIModel(
            settings.reference_model,
            base_url=settings.reference_base_url,
            api_key=settings.reference_api_key,
            timeout=min(settings.reference_timeout, settings.model_timeout),
            max_new_tokens=min(settings.reference_max_new_tokens, settings.max_new_tokens),
        )
        gate = model_gate(lambda: reference, settings)
    return Hints(game=game, gate=gate, max_chars=settings.max_question_chars)


@dataclass(frozen=True)
class _Claim:
    round_id: str
    asked_at: datetime
    deadline: datetime
    """The round's deadline when the hint was asked, which moves by the model's writing time."""
    image: ImageInput
    writer: tuple[str, str | None] | None = None
    """(spec, adapter) of the session's round of collection, which writes the hint when the game's
    own gate does (no reference endpoint). None: the gate's own model."""


async def hint(hints: Hints, player_id: str, round_id: str) -> str:
    """The round's hint: the stored one, or a new one from the model (then stored)."""
    claimed = await anyio.to_thread.run_sync(_claim, hints, player_id, round_id)
    if isinstance(claimed, str):
        return claimed
    try:
        reply, model_name = await hints.gate.answer(
            claimed.image, [ChatMessage("user", HINT_PROMPT)], None, round_model(hints.game, claimed.writer)
        )
        text = clean_hint(reply, hints.max_chars)
    except Exception as exc:
        await anyio.to_thread.run_sync(_release, hints, claimed)
        raise player_facing_error(exc) from exc
    return await anyio.to_thread.run_sync(_store, hints, claimed, text, model_name)


def _claim(hints: Hints, player_id: str, round_id: str) -> str | _Claim:
    game, now = hints.game, hints.game.clock()
    try:
        with transaction(game.factory) as db:
            rnd = owned_round(db, player_id, round_id)
            advance_rounds(db, rnd.session_id, rnd.session.status, game.rules, now)
            db.refresh(rnd)
            if rnd.ended_at is not None:
                raise RoundOver("this round is over")
            if rnd.started_at is None or rnd.deadline is None:
                raise Conflict("this round has not started yet")
            row = db.get(RoundHint, round_id)
            if row is not None and row.text:
                return row.text
            if row is None:
                db.add(RoundHint(round_id=round_id, asked_at=now))
                db.flush()
            elif now - row.asked_at > hints.stale_after:
                taken = db.execute(
                    update(RoundHint)
                    .where(RoundHint.round_id == round_id, RoundHint.asked_at == row.asked_at)
                    .values(asked_at=now)
                )
                if not cast(CursorResult[Any], taken).rowcount:
                    raise Conflict("a hint for this round is on its way; ask again in a moment")
            else:
                raise Conflict("a hint for this round is on its way; ask again in a moment")
            key = rnd.image.path
            mime = rnd.image.mime_type
            campaign = (  # its model writes the hint where the game's own gate does
                db.get(CollectionRound, rnd.session.collection_round)
                if rnd.session.collection_round and hints.gate is game.gate
                else None
            )
            writer = (campaign.model, campaign.adapter) if campaign is not None else None
            deadline = rnd.deadline
    except IntegrityError as exc:
        raise Conflict("a hint for this round is on its way; ask again in a moment") from exc
    claim_without_image = _Claim(round_id, now, deadline, ImageInput(b"", mime))
    try:
        data = game.images.get(key)
    except GapError as exc:
        _release(hints, claim_without_image)
        if isinstance(exc, NotFound):
            raise NotFound("the image of this round is missing on the server") from exc
        raise
    return _Claim(round_id, now, deadline, ImageInput(data, mime), writer)


def _give_back_time(db: Session, hints: Hints, claim: _Claim) -> None:
    """Move the round's deadline by the model's writing time (at most its time-out), as a question's
    answering time is: the player's clock does not run while the server writes a hint. Only if the
    deadline is still the one the hint saw: a question answered meanwhile moved it, and wins."""
    moved = credited_deadline(claim.deadline, claim.asked_at, hints.game.clock(), hints.gate.timeout)
    db.execute(
        update(Round)
        .where(Round.id == claim.round_id, Round.ended_at.is_(None), Round.deadline == claim.deadline)
        .values(deadline=moved)
    )


def _release(hints: Hints, claim: _Claim) -> None:
    with transaction(hints.game.factory) as db:
        db.execute(
            delete(RoundHint).where(
                RoundHint.round_id == claim.round_id,
                RoundHint.asked_at == claim.asked_at,
                RoundHint.text.is_(None),
            )
        )
        _give_back_time(db, hints, claim)


def _store(hints: Hints, claim: _Claim, text: str, model_name: str) -> str:
    """Keep the hint; a hint stored meanwhile (a lost claim taken over) wins, so a round has one."""
    with transaction(hints.game.factory) as db:
        stored = db.execute(
            update(RoundHint)
            .where(RoundHint.round_id == claim.round_id, RoundHint.text.is_(None))
            .values(text=text, model=model_name, written_at=hints.game.clock())
        )
        _give_back_time(db, hints, claim)
        if cast(CursorResult[Any], stored).rowcount:
            return text
        row = db.get(RoundHint, claim.round_id)
        return row.text if row is not None and row.text else text
