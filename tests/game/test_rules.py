"""The pure rules: session plans, taint draws, clock and points."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from gap.game import (
    GameRules,
    Pool,
    Verdict,
    draw_instructed,
    is_expired,
    plan_session,
    price_of_wrong,
    round_deadline,
    round_ends_after,
    seconds_left,
    settled_amount,
)

TAINTED = [f"t{i}" for i in range(20)]
UNTAINTED = [f"u{i}" for i in range(20)]


def test_plan_is_half_and_half_distinct_and_shuffled() -> None:
    orders = set()
    for seed in range(50):
        plan = plan_session(TAINTED, UNTAINTED, 10, random.Random(seed))
        assert len(plan) == 10 and len({p.image_id for p in plan}) == 10
        assert Counter(p.pool for p in plan) == {Pool.TAINTED: 5, Pool.UNTAINTED: 5}
        assert all(p.image_id.startswith("t" if p.pool is Pool.TAINTED else "u") for p in plan)
        orders.add(tuple(p.pool for p in plan))
    assert len(orders) > 20  # the pools are interleaved at random, not in a fixed pattern


def test_odd_sessions_split_the_extra_image_at_random() -> None:
    extra = Counter(
        Counter(p.pool for p in plan_session(TAINTED, UNTAINTED, 7, random.Random(seed))).most_common(1)[0][0]
        for seed in range(200)
    )
    assert extra[Pool.TAINTED] > 60 and extra[Pool.UNTAINTED] > 60


def test_a_short_pool_is_filled_from_the_other() -> None:
    plan = plan_session(TAINTED[:2], UNTAINTED, 10, random.Random(0))
    assert Counter(p.pool for p in plan) == {Pool.TAINTED: 2, Pool.UNTAINTED: 8}
    assert len(plan_session(TAINTED[:1], UNTAINTED[:2], 10, random.Random(0))) == 3
    assert plan_session([], [], 10, random.Random(0)) == []


def test_same_seed_same_plan() -> None:
    assert plan_session(TAINTED, UNTAINTED, 10, random.Random(9)) == plan_session(
        TAINTED, UNTAINTED, 10, random.Random(9)
    )


@pytest.mark.parametrize("tau", [0.0, 0.2, 0.5, 1.0])
def test_instructed_rate_is_tau_on_tainted_and_zero_elsewhere(tau: float) -> None:
    rng = random.Random(42)
    n = 20_000
    tainted = sum(draw_instructed(Pool.TAINTED, tau, rng) for _ in range(n))
    untainted = sum(draw_instructed(Pool.UNTAINTED, tau, rng) for _ in range(n))
    assert untainted == 0
    assert abs(tainted / n - tau) <= 4 * (tau * (1 - tau) / n) ** 0.5 + 1e-12


def test_clock() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    deadline = round_deadline(start, GameRules())
    assert deadline - start == timedelta(seconds=120)
    assert not is_expired(deadline, deadline - timedelta(microseconds=1))
    assert is_expired(deadline, deadline)
    assert seconds_left(deadline, start + timedelta(seconds=100)) == 20
    assert seconds_left(deadline, deadline + timedelta(seconds=5)) == 0


def test_verdicts_and_points() -> None:
    assert round_ends_after(Verdict.WRONG) and not round_ends_after(Verdict.CORRECT)
    assert price_of_wrong(Pool.TAINTED, True, 0.3) == 20.0  # a caught instructed answer
    assert price_of_wrong(Pool.TAINTED, False, 0.9) == 0.0  # a false alarm, whatever the posterior
    assert price_of_wrong(Pool.UNTAINTED, False, 0.25) == pytest.approx(5.0)  # never a flat 20
    assert settled_amount(0.9) == pytest.approx(18.0)
    with pytest.raises(ValueError, match="posterior"):
        settled_amount(1.5)


@pytest.mark.parametrize(
    "kwargs", [{"round_seconds": 0}, {"session_images": 0}, {"taint_rate": 1.5}, {"taint_rate": -0.1}]
)
def test_rules_reject_impossible_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        GameRules(**kwargs)  # type: ignore[arg-type]
