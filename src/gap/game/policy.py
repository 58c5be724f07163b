"""Which untainted images a new session gets (`GAP_IMAGE_POLICY`), as pure code.

The session's tainted/untainted split is decided before any policy runs (:func:`plan_session`), and
tainted images are always drawn uniformly: they measure players' reliability, and a policy that
steered them, or changed the split, could reveal which pool an image is in. A policy only chooses
*which* untainted images fill the untainted slots:

- ``uniform``: a uniform sample, as in the paper;
- ``coverage``: the least-played images first (ties broken at random);
- ``weakest``: Thompson sampling on each image's rate of exposing a real model error. The rate's
  posterior is Beta(1 + e, 1 + n - e), where n is the image's judged untainted questions and e the
  expected real errors among them (the sum of their P(model wrong) in the stored quality fit). Each
  slot is, with probability ``exploration``, a uniform draw instead (a floor on every image's chance),
  and images already served ``exposure_cap`` rounds are left out while others remain.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum


class ImagePolicy(StrEnum):
    UNIFORM = "uniform"
    COVERAGE = "coverage"
    WEAKEST = "weakest"


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """What a policy knows about one untainted image."""

    plays: int = 0
    """Rounds served on it so far."""
    errors: float = 0.0
    """Expected real model errors its judged questions exposed (sum of their P(model wrong))."""
    questions: int = 0
    """Its judged questions covered by the quality fit."""


@dataclass(frozen=True, slots=True)
class PolicyParams:
    exploration: float = 0.1
    """``weakest``: chance that a slot is filled uniformly instead of by Thompson sampling."""
    exposure_cap: int = 0
    """``weakest``: rounds after which an image is left out while others remain (0: no cap)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.exploration <= 1.0:
            raise ValueError(f"exploration must be in [0, 1], got {self.exploration}")
        if self.exposure_cap < 0:
            raise ValueError(f"exposure_cap must be >= 0, got {self.exposure_cap}")


NO_RECORD = ImageRecord()


def _least_played(
    candidates: Sequence[str], k: int, records: Mapping[str, ImageRecord], rng: random.Random
) -> list[str]:
    keyed = [(records.get(c, NO_RECORD).plays, rng.random(), c) for c in candidates]
    return [c for _, _, c in sorted(keyed)[:k]]


def thompson_draw(record: ImageRecord, rng: random.Random) -> float:
    """One draw of the image's rate of exposing a real error from its Beta posterior."""
    errors = min(max(record.errors, 0.0), float(record.questions))
    return rng.betavariate(1.0 + errors, 1.0 + record.questions - errors)


def _weakest(
    candidates: Sequence[str],
    k: int,
    records: Mapping[str, ImageRecord],
    rng: random.Random,
    params: PolicyParams,
) -> list[str]:
    cap = params.exposure_cap
    open_ = [c for c in candidates if not cap or records.get(c, NO_RECORD).plays < cap]
    capped = [c for c in candidates if cap and records.get(c, NO_RECORD).plays >= cap]
    draws = {c: thompson_draw(records.get(c, NO_RECORD), rng) for c in open_}
    ranked = sorted(open_, key=lambda c: -draws[c])
    chosen: list[str] = []
    for _ in range(min(k, len(open_))):
        explore = rng.random() < params.exploration
        pick = ranked[rng.randrange(len(ranked))] if explore else ranked[0]
        ranked.remove(pick)
        chosen.append(pick)
    # Every open image is taken: the slots left go to the least-played capped images.
    return chosen + _least_played(capped, k - len(chosen), records, rng)


def choose_untainted(
    policy: ImagePolicy,
    candidates: Sequence[str],
    k: int,
    records: Mapping[str, ImageRecord],
    rng: random.Random,
    params: PolicyParams = PolicyParams(),
) -> list[str]:
    """``k`` distinct images out of ``candidates`` (all of them if fewer), under ``policy``."""
    k = min(k, len(candidates))
    if policy is ImagePolicy.COVERAGE:
        return _least_played(candidates, k, records, rng)
    if policy is ImagePolicy.WEAKEST:
        return _weakest(candidates, k, records, rng, params)
    return rng.sample(list(candidates), k)
