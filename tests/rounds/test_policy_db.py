"""`GAP_IMAGE_POLICY=weakest` in the game service: sessions go where the stored fit says the model is
weak, the split never moves, and the exposure cap holds on the rounds table."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pytest
from sqlalchemy import select

from fixtures.game import seed_images
from gap.config import Settings
from gap.db.engine import make_engine, make_sessionmaker, transaction
from gap.db.models import GameSession, Player, Round
from gap.game import GameRules
from gap.models.gate import model_gate
from gap.quality import simulate
from gap.services.admin import QualityView, store_quality_view, view_of_fit
from gap.services.game import GameContext, start_session
from gap.services.image_policy import untainted_picker
from gap.services.quality import DatabaseFit, reliability_estimator
from gap.storage import LocalStore

pytestmark = pytest.mark.db


def no_model() -> object:
    raise AssertionError("no question is asked in these tests")


def test_weakest_serves_the_weak_images_until_their_cap(settings: Settings) -> None:
    pools = seed_images(settings, per_pool=12)
    untainted = sorted(i for i, pool in pools.items() if pool == "untainted")
    weak = untainted[:2]
    current = settings.model_copy(
        update={"image_policy": "weakest", "image_exploration": 0.0, "image_exposure_cap": 3}
    )
    engine = make_engine(current.resolved_database_url)
    factory = make_sessionmaker(engine)
    now = datetime.now(UTC)
    with transaction(factory) as db:
        errors = {i: [40.0 if i in weak else 0.0, 40.0] for i in untainted}
        store_quality_view(db, QualityView(True, image_errors=errors), turns=480, now=now)
        players = [Player(name=f"p{i}", token_hash=f"{i:064d}", created_at=now) for i in range(6)]
        db.add_all(players)
        db.flush()
        player_ids = [p.id for p in players]
    ctx = GameContext(
        factory=factory,
        rules=GameRules(round_seconds=120, session_images=4, taint_rate=0.5),
        model=no_model,  # type: ignore[arg-type]
        images=LocalStore(current.images_dir),
        gate=model_gate(no_model, current),  # type: ignore[arg-type]
        rng=random.Random(0),
        pick_untainted=untainted_picker(current),
    )
    served: list[set[str]] = []
    for player_id in player_ids:
        view = start_session(ctx, player_id)
        with transaction(factory) as db:
            session = db.get(GameSession, view.session_id)
            assert session is not None
            by_pool = Counter(r.pool for r in session.rounds)
            assert by_pool == {"tainted": 2, "untainted": 2}
            served.append({r.image_id for r in session.rounds if r.pool == "untainted"})
    assert served[:3] == [set(weak)] * 3
    assert all(not (s & set(weak)) for s in served[3:])
    with transaction(factory) as db:
        plays = Counter(db.scalars(select(Round.image_id)))
    assert plays[weak[0]] == plays[weak[1]] == 3
    engine.dispose()


def test_uniform_needs_no_picker(settings: Settings) -> None:
    assert untainted_picker(settings) is None


def test_the_stored_fit_carries_each_untainted_images_error_evidence() -> None:
    """On gap.quality's simulated population, the fit's per-image rate follows the true one."""
    sim = simulate(n_players=60, n_images=40, n_sessions=400, random_state=0)
    estimator = reliability_estimator(Settings())
    fit = DatabaseFit(sim.turns, estimator, estimator.fit_predict_proba(sim.turns))
    view = view_of_fit(fit, theta=0.8)
    untainted = sim.turns[sim.turns["pool"] == "untainted"]
    assert set(view.image_errors) == set(untainted["image_id"].astype(str))
    counts = untainted["image_id"].astype(str).value_counts()
    assert all(view.image_errors[i][1] == counts[i] for i in view.image_errors)
    truth = sim.images.set_index(sim.images["image_id"].astype(str))["pi"]
    ids = sorted(view.image_errors)
    rates = np.array([view.image_errors[i][0] / view.image_errors[i][1] for i in ids])
    assert np.corrcoef(rates, truth.loc[ids].to_numpy())[0, 1] > 0.8
