"""The model-fooled rate per round of collection (kept untainted Wrongs per untainted question)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gap.config import Settings
from gap.quality import keep_mask, simulate
from gap.services.admin import view_of_fit
from gap.services.quality import DatabaseFit, reliability_estimator
from gap.services.rounds import fooled_rates, wilson


def round_of(intercept: float, number: int, seed: int) -> pd.DataFrame:
    """One round's turns: the model errs with sigmoid(intercept - difficulty) on untainted images."""
    turns = simulate(n_players=80, n_images=40, n_sessions=500, intercept=intercept, random_state=seed).turns
    for column in ("turn_id", "session_id", "image_id"):
        turns[column] = f"r{number}-" + turns[column].astype(str)
    return turns.assign(collection_round=number)


def test_the_fooled_rate_falls_when_the_model_improves() -> None:
    """Round 2's model errs far less: one fit over both rounds shows it, with separated intervals."""
    turns = pd.concat([round_of(-0.5, 1, 1), round_of(-3.0, 2, 2)], ignore_index=True)
    turns = pd.concat([turns, round_of(-0.5, 0, 3).assign(collection_round=pd.NA)], ignore_index=True)
    estimator = reliability_estimator(Settings())
    p = estimator.fit_predict_proba(turns)
    rates = fooled_rates(turns, p, theta=0.8)
    # What the worker stores for the dashboard is the same figure.
    stored = view_of_fit(DatabaseFit(turns, estimator, p), theta=0.8).fooled_by_round
    assert stored == {str(n): [r.kept, r.questions, r.rate, r.low, r.high] for n, r in rates.items()}
    assert set(rates) == {1, 2}  # turns of no round are left out
    first, second = rates[1], rates[2]
    assert first.high < 1 and second.low < second.rate < second.high
    assert second.high < first.low, (first, second)
    kept = keep_mask(turns, p, 0.8)
    in_first = (turns["collection_round"] == 1).fillna(False).to_numpy() & (
        turns["pool"] == "untainted"
    ).to_numpy()
    assert first.kept == int(np.sum(kept & in_first)) and first.questions == int(np.sum(in_first))
    print(f"model fooled: round 1 {first.rate:.3f} [{first.low:.3f}, {first.high:.3f}], 2 {second.rate:.3f}")


def test_wilson_interval() -> None:
    low, high = wilson(10, 100)
    assert round(low, 4) == 0.0552 and round(high, 4) == 0.1744  # the textbook values
    assert wilson(0, 0) == (0.0, 1.0)
    assert wilson(0, 20)[0] == 0.0 and wilson(20, 20)[1] == 1.0
