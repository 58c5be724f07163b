"""One contract over every estimator (scikit-learn's habits): __init__ stores parameters only, fit
returns self and is idempotent, unfitted use raises NotFittedError, bad parameters name themselves."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import gap.quality
from gap.errors import ConfigError, GapError
from gap.quality import NotFittedError, PlayerModel, ReliabilityEstimator, Simulation

ESTIMATORS: list[tuple[type[Any], Callable[[Any, Simulation], Any], str, Callable[[Any], Any]]] = [
    (
        ReliabilityEstimator,
        lambda est, sim: est.fit(sim.turns),
        "predict_proba",
        lambda est: (est.players_, est.pi_),
    ),
    (
        PlayerModel,
        lambda est, sim: est.fit(sim.turns, sim.truth["model_wrong"]),
        "predict_proba",
        lambda est: (est.coef_, est.ability_),
    ),
]
IDS = [e[0].__name__ for e in ESTIMATORS]


@pytest.mark.parametrize(("cls", "fit", "method", "result"), ESTIMATORS, ids=IDS)
def test_init_only_stores_keyword_parameters(cls: type[Any], fit: Any, method: str, result: Any) -> None:
    est = cls()
    params = est.get_params()
    assert vars(est) == params
    sig = inspect.signature(cls.__init__)
    assert all(p.kind is p.KEYWORD_ONLY for name, p in sig.parameters.items() if name != "self")
    assert all(p.default is not p.empty for name, p in sig.parameters.items() if name != "self")
    assert repr(est) == f"{cls.__name__}()"
    assert repr(cls().set_params(max_iter=7)) == f"{cls.__name__}(max_iter=7)"
    with pytest.raises(ConfigError, match="no parameter 'nope'"):
        est.set_params(nope=1)


@pytest.mark.parametrize(("cls", "fit", "method", "result"), ESTIMATORS, ids=IDS)
def test_unfitted_raises_not_fitted(
    cls: type[Any], fit: Any, method: str, result: Any, small_sim: Simulation
) -> None:
    with pytest.raises(NotFittedError, match="not fitted yet") as info:
        getattr(cls(), method)(small_sim.turns)
    assert isinstance(info.value, AttributeError) and isinstance(info.value, GapError)


@pytest.mark.parametrize(("cls", "fit", "method", "result"), ESTIMATORS, ids=IDS)
def test_fit_returns_self_is_idempotent_and_deterministic(
    cls: type[Any], fit: Any, method: str, result: Any, small_sim: Simulation
) -> None:
    est = cls()
    assert fit(est, small_sim) is est
    first = getattr(est, method)(small_sim.turns)
    fit(est, small_sim)
    again = getattr(est, method)(small_sim.turns)
    other = getattr(fit(cls(), small_sim), method)(small_sim.turns)
    assert np.array_equal(first, again) and np.array_equal(first, other)
    assert est.n_iter_ >= 1 and isinstance(est.loss_history_, list)
    assert est.get_params() == cls().get_params()  # fitting never changes parameters


@pytest.mark.parametrize(("cls", "fit", "method", "result"), ESTIMATORS, ids=IDS)
def test_bad_parameters_are_named(
    cls: type[Any], fit: Any, method: str, result: Any, small_sim: Simulation
) -> None:
    with pytest.raises(ConfigError, match=r"max_iter must be an int in \[1, inf\], got 0"):
        fit(cls(max_iter=0), small_sim)
    with pytest.raises(ConfigError, match="tol must be a float"):
        fit(cls(tol="small"), small_sim)


def test_random_state_seeds_the_subsampled_priors(small_sim: Simulation) -> None:
    """Subsets only matter on tables larger than the limits; with tiny limits the seed shows."""
    small: dict[str, Any] = {"max_prior_players": 20, "max_prior_rows": 500}
    a = ReliabilityEstimator(**small, random_state=1).fit_predict_proba(small_sim.turns)
    b = ReliabilityEstimator(**small, random_state=1).fit_predict_proba(small_sim.turns)
    c = ReliabilityEstimator(**small, random_state=2).fit_predict_proba(small_sim.turns)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_public_names_are_exported_sorted() -> None:
    names = gap.quality.__all__
    # ruff's RUF022 order: CONSTANTS, then Classes, then functions, each alphabetical
    assert names == sorted(names, key=lambda n: (not n.isupper(), not n[0].isupper(), n))
    assert all(hasattr(gap.quality, n) for n in names)
    public = {
        n
        for n, obj in vars(gap.quality).items()
        if not n.startswith("_") and getattr(obj, "__module__", "").startswith("gap.quality")
    }
    assert public <= set(names)
