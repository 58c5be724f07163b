"""Simulated populations shared by the quality tests (built once per session: they cost seconds)."""

from __future__ import annotations

import pytest
from quality_helpers import Fitted

from gap.quality import ReliabilityEstimator, Simulation, simulate


@pytest.fixture(scope="session")
def population() -> Fitted:
    """~1,500 players with the game's mechanics, careless players and spammers, and time/fatigue
    effects; the default estimator fitted on it."""
    sim = simulate(n_players=1500, n_images=400, n_sessions=15_000, random_state=11)
    est = ReliabilityEstimator()
    p = est.fit_predict_proba(sim.turns)
    turns = sim.turns
    return Fitted(
        sim=sim,
        estimator=est,
        p_wrong=p,
        untainted=(turns["pool"] == "untainted").to_numpy(),
        wrong=(turns["verdict"] == "wrong").to_numpy(),
        model_wrong=sim.truth["model_wrong"].to_numpy(),
    )


@pytest.fixture(scope="session")
def small_sim() -> Simulation:
    return simulate(n_players=60, n_images=40, n_sessions=400, random_state=5)
