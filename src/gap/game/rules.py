"""The rules of a GAP session, as pure functions (METHOD.md sections 1 and 5).

Nothing here touches the web, the database or a model; the clock and the random generator are passed
in, so every rule is deterministic under test.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class Pool(StrEnum):
    """Where an image comes from. Players never learn it."""

    TAINTED = "tainted"
    UNTAINTED = "untainted"


class Verdict(StrEnum):
    CORRECT = "correct"
    WRONG = "wrong"


class EndReason(StrEnum):
    WRONG = "wrong"
    TIMEOUT = "timeout"


POINTS_PER_CATCH = 20.0


@dataclass(frozen=True, slots=True)
class GameRules:
    """The knobs of the game; defaults are the paper's."""

    round_seconds: float = 120.0
    session_images: int = 10
    taint_rate: float = 0.5

    def __post_init__(self) -> None:
        if self.round_seconds <= 0:
            raise ValueError(f"round_seconds must be > 0, got {self.round_seconds}")
        if self.session_images < 1:
            raise ValueError(f"session_images must be >= 1, got {self.session_images}")
        if not 0.0 <= self.taint_rate <= 1.0:
            raise ValueError(f"taint_rate must be in [0, 1], got {self.taint_rate}")


@dataclass(frozen=True, slots=True)
class PlannedRound:
    image_id: str
    pool: Pool


def plan_session(
    tainted: Sequence[str],
    untainted: Sequence[str],
    n_images: int,
    rng: random.Random,
    pick_untainted: Callable[[Sequence[str], int], list[str]] | None = None,
) -> list[PlannedRound]:
    """Pick ``n_images`` distinct images, half from each pool, in random order.

    An odd count gives the extra image to a random pool. When a pool is short, the other pool fills
    the gap, so a session is as long as the images allow (at most ``n_images``). The split never
    depends on ``pick_untainted`` (the image policy, :mod:`gap.game.policy`), which only chooses
    which untainted images fill their slots (default: uniformly).
    """
    want_tainted = n_images // 2 + (rng.random() < 0.5 if n_images % 2 else 0)
    take_tainted = min(want_tainted, len(tainted))
    take_untainted = min(n_images - take_tainted, len(untainted))
    take_tainted = min(n_images - take_untainted, len(tainted))
    rounds = [PlannedRound(i, Pool.TAINTED) for i in rng.sample(list(tainted), take_tainted)]
    picked = (
        pick_untainted(untainted, take_untainted)
        if pick_untainted is not None
        else rng.sample(list(untainted), take_untainted)
    )
    rounds += [PlannedRound(i, Pool.UNTAINTED) for i in picked]
    rng.shuffle(rounds)
    return rounds


def draw_instructed(pool: Pool, taint_rate: float, rng: random.Random) -> bool:
    """Whether this answer is generated under the instruction to be wrong (only on tainted images)."""
    return pool is Pool.TAINTED and rng.random() < taint_rate


def round_deadline(started_at: datetime, rules: GameRules) -> datetime:
    return started_at + timedelta(seconds=rules.round_seconds)


def seconds_left(deadline: datetime, now: datetime) -> float:
    return max(0.0, (deadline - now).total_seconds())


def is_expired(deadline: datetime, now: datetime) -> bool:
    """The server clock is the truth: a round is over at its deadline, whatever the client shows."""
    return now >= deadline


def round_ends_after(verdict: Verdict) -> bool:
    """Correct keeps the round going; Wrong ends it (METHOD.md section 1)."""
    return verdict is Verdict.WRONG


def price_of_wrong(pool: Pool, instructed: bool, posterior_wrong: float) -> float:
    """METHOD.md section 5, applied when settlement credits a Wrong verdict: 20 for catching an
    instructed answer, nothing for a false alarm on a tainted image, 20 x posterior on an untainted one.
    A Correct verdict earns nothing. Until settlement every Wrong shows as a pending 20, whatever the pool."""
    if pool is Pool.TAINTED:
        return POINTS_PER_CATCH if instructed else 0.0
    return settled_amount(posterior_wrong)


def settled_amount(posterior_wrong: float) -> float:
    """What an untainted Wrong is finally worth: 20 x P(M=0 | H=0, D=U, p)."""
    if not 0.0 <= posterior_wrong <= 1.0:
        raise ValueError(f"posterior must be in [0, 1], got {posterior_wrong}")
    return POINTS_PER_CATCH * posterior_wrong
