"""`GAP_IMAGE_POLICY` in the game: what each untainted image's record says, for :mod:`gap.game.policy`.

Plays are counted from the rounds table at each new session; the error evidence comes from the
newest quality fit the worker stored (``quality_fits``), read again only when a newer fit appears.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable, Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gap.config import Settings
from gap.db.models import QualityFit, Round
from gap.game.policy import ImagePolicy, ImageRecord, PolicyParams, choose_untainted

UntaintedPicker = Callable[[Session, Sequence[str], int, random.Random], list[str]]
"""Fills a new session's untainted slots: (database, candidate image ids, how many, generator)."""


class _FitErrors:
    """Per-image error evidence of the newest stored fit, reloaded only when its id changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fit_id: int | None = None
        self._errors: dict[str, tuple[float, int]] = {}

    def get(self, db: Session) -> dict[str, tuple[float, int]]:
        newest = db.scalar(select(func.max(QualityFit.id)))
        with self._lock:
            if newest != self._fit_id:
                summary = db.scalar(select(QualityFit.summary).where(QualityFit.id == newest))
                raw = json.loads(summary).get("image_errors", {}) if summary else {}
                self._errors = {str(k): (float(v[0]), int(v[1])) for k, v in raw.items()}
                self._fit_id = newest
            return self._errors


def image_records(
    db: Session, candidates: Sequence[str], errors: dict[str, tuple[float, int]]
) -> dict[str, ImageRecord]:
    wanted = set(candidates)
    plays = {
        image_id: int(count)
        for image_id, count in db.execute(select(Round.image_id, func.count()).group_by(Round.image_id))
        if image_id in wanted
    }
    return {c: ImageRecord(plays.get(c, 0), *errors.get(c, (0.0, 0))) for c in candidates}


def untainted_picker(settings: Settings) -> UntaintedPicker | None:
    """The configured policy's picker; None for ``uniform`` (the game's own uniform draw)."""
    policy = ImagePolicy(settings.image_policy)
    if policy is ImagePolicy.UNIFORM:
        return None
    params = PolicyParams(exploration=settings.image_exploration, exposure_cap=settings.image_exposure_cap)
    fit_errors = _FitErrors()

    def pick(db: Session, candidates: Sequence[str], k: int, rng: random.Random) -> list[str]:
        errors = fit_errors.get(db) if policy is ImagePolicy.WEAKEST else {}
        return choose_untainted(policy, candidates, k, image_records(db, candidates, errors), rng, params)

    return pick
