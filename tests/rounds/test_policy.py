"""The image policies (pure): the session's split never moves, `weakest` finds more real model errors
than `uniform` on a population with known image difficulties, the exposure cap holds."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pytest

from gap.game import Pool, plan_session
from gap.game.policy import ImagePolicy, ImageRecord, PolicyParams, choose_untainted

TAINTED = [f"t{i:03d}" for i in range(60)]
UNTAINTED = [f"u{i:03d}" for i in range(150)]
SENSITIVITY, FALSE_ALARM, PI, THETA = 0.9, 0.03, 0.2, 0.8
QUESTIONS_PER_ROUND = 3


def posterior_wrong(verdict_wrong: bool) -> float:
    """P(model wrong | verdict) for a careful player: what the stored quality fit gives each turn."""
    a, b = (SENSITIVITY, FALSE_ALARM) if verdict_wrong else (1 - SENSITIVITY, 1 - FALSE_ALARM)
    return a * PI / (a * PI + b * (1 - PI))


def picker(
    policy: ImagePolicy, records: Mapping[str, ImageRecord], rng: random.Random, params: PolicyParams
) -> Callable[[Sequence[str], int], list[str]]:
    """What plan_session calls to fill the untainted slots, as the game service does."""
    return lambda candidates, k: choose_untainted(policy, candidates, k, records, rng, params)


@dataclass
class Campaign:
    """Sessions played by careful players on images whose real error rates are known; the policy
    sees plays at once and errors only at each refit (every ``refit_every`` sessions), as from the worker."""

    policy: ImagePolicy
    seed: int
    params: PolicyParams = field(default_factory=PolicyParams)
    refit_every: int = 10
    plays: Counter[str] = field(default_factory=Counter)
    fitted: dict[str, ImageRecord] = field(default_factory=dict)
    errors: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    questions: Counter[str] = field(default_factory=Counter)
    kept_real_errors: int = 0
    untainted_rounds: int = 0

    def __post_init__(self) -> None:
        truth = random.Random(1000 + self.seed)
        # A tenth of the images are where the model is weak (half its answers wrong), the rest solid.
        self.rate = {i: (0.5 if truth.random() < 0.1 else 0.03) for i in UNTAINTED}
        self.rng = random.Random(self.seed)

    def records(self) -> dict[str, ImageRecord]:
        fitted = self.fitted
        return {
            i: ImageRecord(self.plays[i], fitted[i].errors, fitted[i].questions)
            if i in fitted
            else ImageRecord(self.plays[i])
            for i in UNTAINTED
        }

    def play(self, sessions: int) -> None:
        for n in range(sessions):
            plan = plan_session(
                TAINTED, UNTAINTED, 10, self.rng, picker(self.policy, self.records(), self.rng, self.params)
            )
            for planned in plan:
                if planned.pool is Pool.UNTAINTED:
                    self.play_round(planned.image_id)
            if (n + 1) % self.refit_every == 0:
                self.fitted = {
                    i: ImageRecord(0, self.errors[i], self.questions[i])
                    for i in UNTAINTED
                    if self.questions[i]
                }

    def play_round(self, image: str) -> None:
        self.plays[image] += 1
        self.untainted_rounds += 1
        for _ in range(QUESTIONS_PER_ROUND):
            real_error = self.rng.random() < self.rate[image]
            wrong = self.rng.random() < (SENSITIVITY if real_error else FALSE_ALARM)
            p = posterior_wrong(wrong)
            self.errors[image] += p
            self.questions[image] += 1
            if wrong:
                self.kept_real_errors += int(real_error and p >= THETA)
                return


def kept_per_100_rounds(policy: ImagePolicy, seeds: range, **params: float | int) -> float:
    total, rounds = 0, 0
    for seed in seeds:
        campaign = Campaign(policy, seed, PolicyParams(**params))  # type: ignore[arg-type]
        campaign.play(200)
        total += campaign.kept_real_errors
        rounds += campaign.untainted_rounds
    return 100 * total / rounds


def test_weakest_finds_more_kept_errors_per_100_rounds_than_uniform() -> None:
    seeds = range(4)
    uniform = kept_per_100_rounds(ImagePolicy.UNIFORM, seeds)
    coverage = kept_per_100_rounds(ImagePolicy.COVERAGE, seeds)
    weakest = kept_per_100_rounds(ImagePolicy.WEAKEST, seeds, exploration=0.1, exposure_cap=40)
    print(f"kept real errors per 100 untainted rounds: {uniform=:.1f} {coverage=:.1f} {weakest=:.1f}")
    assert weakest > 1.5 * uniform
    assert abs(coverage - uniform) < 0.35 * uniform  # coverage spreads rounds, it does not aim


@pytest.mark.parametrize("n_images", [9, 10])
def test_no_policy_moves_the_tainted_untainted_split(n_images: int) -> None:
    records = {i: ImageRecord(plays=k % 7, errors=float(k % 5), questions=6) for k, i in enumerate(UNTAINTED)}
    for seed in range(200):
        splits = set()
        for policy in ImagePolicy:
            rng = random.Random(seed)
            plan = plan_session(
                TAINTED, UNTAINTED, n_images, rng, picker(policy, records, rng, PolicyParams())
            )
            assert len({p.image_id for p in plan}) == n_images
            splits.add(sum(p.pool is Pool.TAINTED for p in plan))
        assert len(splits) == 1 and splits.pop() in (n_images // 2, n_images - n_images // 2)


def test_tainted_images_stay_uniform_under_every_policy() -> None:
    records = {i: ImageRecord(plays=0, errors=30.0, questions=30) for i in UNTAINTED[:5]}
    seen: Counter[str] = Counter()
    rng = random.Random(3)
    for _ in range(600):
        plan = plan_session(
            TAINTED,
            UNTAINTED,
            10,
            rng,
            lambda c, k: choose_untainted(ImagePolicy.WEAKEST, c, k, records, rng),
        )
        seen.update(p.image_id for p in plan if p.pool is Pool.TAINTED)
    # 3000 tainted slots over 60 images: 50 each on average; a uniform draw stays well inside 20-80.
    assert set(seen) == set(TAINTED) and min(seen.values()) > 20 and max(seen.values()) < 80


def test_the_exposure_cap_holds_while_other_images_remain() -> None:
    campaign = Campaign(ImagePolicy.WEAKEST, seed=7, params=PolicyParams(exploration=0.0, exposure_cap=12))
    campaign.play(300)  # 1500 untainted rounds over 150 images: 10 each on average
    assert max(campaign.plays.values()) <= 12
    weak = [i for i in UNTAINTED if campaign.rate[i] > 0.1]
    assert all(campaign.plays[i] == 12 for i in weak)  # the cap binds where the model is weak


def test_once_every_image_is_capped_the_least_played_fill_the_slots() -> None:
    records = {i: ImageRecord(plays=5 + (i == "b"), errors=1.0, questions=5) for i in ("a", "b", "c")}
    chosen = choose_untainted(
        ImagePolicy.WEAKEST, ["a", "b", "c"], 2, records, random.Random(0), PolicyParams(exposure_cap=5)
    )
    assert sorted(chosen) == ["a", "c"]


def test_the_exploration_floor_reaches_images_the_fit_rules_out() -> None:
    records = {i: ImageRecord(plays=0, errors=0.0, questions=400) for i in UNTAINTED}
    records["u000"] = ImageRecord(plays=0, errors=200.0, questions=400)
    rng = random.Random(0)
    greedy = Counter(
        choose_untainted(ImagePolicy.WEAKEST, UNTAINTED, 1, records, rng, PolicyParams(exploration=0.0))[0]
        for _ in range(300)
    )
    floor = Counter(
        choose_untainted(ImagePolicy.WEAKEST, UNTAINTED, 1, records, rng, PolicyParams(exploration=0.5))[0]
        for _ in range(300)
    )
    assert greedy == Counter({"u000": 300})
    assert 100 < floor["u000"] < 200 and len(floor) > 50


def test_coverage_plays_the_least_played_first() -> None:
    campaign = Campaign(ImagePolicy.COVERAGE, seed=1)
    campaign.play(61)  # 305 untainted rounds over 150 images
    assert set(campaign.plays.values()) <= {2, 3} and sum(campaign.plays.values()) == 305


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="exploration"):
        PolicyParams(exploration=1.5)
    with pytest.raises(ValueError, match="exposure_cap"):
        PolicyParams(exposure_cap=-1)
