"""The player interaction model: equal to statsmodels' GLM on a small case, gradients right,
abilities, difficulties, time and fatigue recovered from a simulated population."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from quality_helpers import Fitted
from scipy import optimize
from scipy.stats import spearmanr

from gap.errors import InputError
from gap.quality import PlayerModel, covariates, simulate
from gap.quality import _glm as glm
from gap.quality._reliability import _mixture_loss


def _small() -> tuple[pd.DataFrame, np.ndarray]:
    """40 players x 15 images, outcomes drawn from equation (5): no separation, mixed outcomes."""
    rng = np.random.default_rng(7)
    n = 3000
    turns = pd.DataFrame(
        {
            "player_id": [f"p{i}" for i in rng.integers(0, 40, n)],
            "image_id": [f"i{j}" for j in rng.integers(0, 15, n)],
            "elapsed_s": rng.uniform(0, 120, n),
            "round_index": rng.integers(1, 11, n),
        }
    )
    ability = dict(zip([f"p{i}" for i in range(40)], rng.normal(0, 0.7, 40), strict=True))
    difficulty = dict(zip([f"i{j}" for j in range(15)], rng.normal(0, 0.7, 15), strict=True))
    eta = (
        -0.5
        + turns["player_id"].map(ability)
        - turns["image_id"].map(difficulty)
        - 1.2 * turns["elapsed_s"] / 120
        - 0.08 * (turns["round_index"] - 1)
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    return turns, y


def _glm(turns: pd.DataFrame, y: np.ndarray) -> object:
    """statsmodels GLM (Binomial) on the reference-coded one-hot design of the same model."""
    sm = pytest.importorskip("statsmodels.api")
    players = pd.get_dummies(turns["player_id"], drop_first=True, dtype=float)
    images = -pd.get_dummies(turns["image_id"], drop_first=True, dtype=float)
    x = pd.concat(
        [
            pd.Series(1.0, index=turns.index, name="intercept"),
            (-turns["elapsed_s"] / 120).rename("time"),
            (-(turns["round_index"] - 1.0)).rename("fatigue"),
            players,
            images,
        ],
        axis=1,
    )
    return sm.GLM(y, x, family=sm.families.Binomial()).fit(tol=1e-12, maxiter=100)


def test_loglik_and_errors_equal_statsmodels_glm() -> None:
    turns, y = _small()
    glm = _glm(turns, y)
    ours = PlayerModel(alpha=0.0).fit(turns, y)
    assert ours.converged_
    assert ours.loglik_ == pytest.approx(glm.llf, rel=1e-6)  # type: ignore[attr-defined]
    # The identified coefficients and their standard errors agree too.
    for name in ("time", "fatigue"):
        assert ours.coef_[name] == pytest.approx(glm.params[name], rel=1e-4)  # type: ignore[attr-defined]
        assert ours.se_[name] == pytest.approx(glm.bse[name], rel=1e-3)  # type: ignore[attr-defined]
    assert np.allclose(ours.predict_proba(turns), glm.fittedvalues, atol=1e-5)  # type: ignore[attr-defined]


def test_weights_act_like_repeated_rows() -> None:
    turns, y = _small()
    weight = np.random.default_rng(1).integers(0, 3, len(y)).astype(float)
    rows = np.repeat(np.arange(len(y)), weight.astype(int))
    a = PlayerModel(alpha=0.5).fit(turns, y, sample_weight=weight)
    b = PlayerModel(alpha=0.5).fit(turns.iloc[rows].reset_index(drop=True), y[rows])
    assert a.loglik_ == pytest.approx(b.loglik_, rel=1e-7)
    assert np.allclose(a.coef_, b.coef_, atol=1e-5)


def test_gradients_match_finite_differences() -> None:
    turns, y = _small()
    turns, y = turns.iloc[:300], y[:300]
    t, n = covariates(turns)
    player, _ = pd.factorize(turns["player_id"])
    image, _ = pd.factorize(turns["image_id"])
    d = glm.Design(player.astype(np.int64), image.astype(np.int64), t, n, player.max() + 1, image.max() + 1)
    coef = np.random.default_rng(0).normal(0, 0.3, d.n_params)
    w = np.ones(len(y))
    llr = np.random.default_rng(1).normal(0, 2, len(y))
    for fun in (
        lambda c: glm.logistic_loss(c, d, y, w, 0.7),
        lambda c: _mixture_loss(c, d, llr, 0.7),
    ):
        err = optimize.check_grad(lambda c, f=fun: f(c)[0], lambda c, f=fun: f(c)[1], coef)
        assert err < 1e-4 * np.sqrt(d.n_params)


def test_large_problem_standard_errors_match_the_dense_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Schur-complement/CG path gives the same shared errors as the exact dense inverse."""
    turns, y = _small()
    dense = PlayerModel(alpha=1.0).fit(turns, y)
    monkeypatch.setattr(glm, "_DENSE_LIMIT", 10)
    sparse = PlayerModel(alpha=1.0).fit(turns, y)
    assert dense.se_exact_ and not sparse.se_exact_
    assert np.allclose(dense.se_, sparse.se_, rtol=1e-6)
    # conditional errors of A are a lower bound of the exact ones
    assert (sparse.ability_se_ <= dense.ability_se_ + 1e-12).all()


def test_recovers_abilities_difficulties_time_and_fatigue(population: Fitted) -> None:
    """Fit on the true success (model wrong) of untainted turns: the model is then well specified."""
    sim = population.sim
    u = population.untainted
    model = PlayerModel().fit(sim.turns[u], population.model_wrong[u])
    truth = sim.params
    for name, key in (("time", "time_coef"), ("fatigue", "fatigue_coef")):
        assert abs(model.coef_[name] - float(truth[key])) < 2 * model.se_[name], model.summary()  # type: ignore[arg-type]
    ability = sim.players.set_index("player_id")["ability"]
    difficulty = sim.images.set_index("image_id")["difficulty"]
    rho_a = spearmanr(model.ability_, ability.reindex(model.ability_.index.astype(str))).statistic
    rho_b = spearmanr(model.difficulty_, difficulty.reindex(model.difficulty_.index.astype(str))).statistic
    assert rho_a >= 0.9 and rho_b >= 0.9, (rho_a, rho_b)
    summary = model.summary()
    assert list(summary.columns) == ["coef", "se", "z", "p"]


def test_fatigue_by_questions_counts_earlier_questions_in_the_session() -> None:
    turns = pd.DataFrame(
        {
            "session_id": ["s1", "s1", "s2", "s1", "s1"],
            "round_index": [2, 1, 1, 1, 2],
            "question_index": [1, 1, 1, 2, 2],
            "elapsed_s": [0.0, 60.0, 0.0, 120.0, 30.0],
        }
    )
    t, n = covariates(turns, fatigue="questions")
    assert n.tolist() == [2, 0, 0, 1, 3]
    assert t.tolist() == [0.0, 0.5, 0.0, 1.0, 0.25]
    _, n_images = covariates(turns, fatigue="images")
    assert n_images.tolist() == [1, 0, 0, 0, 1]


def test_unseen_players_and_images_are_average(small_sim: object) -> None:
    from gap.quality import Simulation

    assert isinstance(small_sim, Simulation)
    turns = small_sim.turns
    model = PlayerModel().fit(turns, small_sim.truth["model_wrong"])
    new = (
        turns.iloc[:1]
        .astype({"player_id": str, "image_id": str})
        .assign(player_id="nobody", image_id="nothing")
    )
    c, g, f = model.coef_
    t, n = covariates(new)
    assert model.decision_function(new)[0] == pytest.approx(c - g * t[0] - f * n[0])


def test_input_errors(small_sim: object) -> None:
    from gap.quality import Simulation

    assert isinstance(small_sim, Simulation)
    turns = small_sim.turns
    y = small_sim.truth["model_wrong"].to_numpy()
    with pytest.raises(InputError, match="y must lie in"):
        PlayerModel().fit(turns, y * 2.0)
    with pytest.raises(InputError, match="y has 3 values"):
        PlayerModel().fit(turns, y[:3])
    with pytest.raises(InputError, match="missing column\\(s\\) elapsed_s"):
        PlayerModel().fit(turns.drop(columns=["elapsed_s"]), y)
    with pytest.raises(InputError, match="positive weight"):
        PlayerModel().fit(turns, y, sample_weight=np.zeros(len(y)))


def test_fit_on_a_simulation_with_few_rows_still_converges() -> None:
    sim = simulate(n_players=8, n_images=12, n_sessions=10, random_state=9)
    model = PlayerModel().fit(sim.turns, sim.truth["model_wrong"])
    assert model.converged_ and np.isfinite(model.se_).all()


def test_identified_on_a_well_posed_problem() -> None:
    turns, y = _small()
    model = PlayerModel().fit(turns, y)
    assert model.identified_ and model.not_identified_ is None


def test_not_identified_when_the_data_cannot_pin_it_down() -> None:
    """Few verdicts, a covariate that never varies, or an outcome that time predicts perfectly:
    each is reported, with the reason, instead of passing coefficients off as estimates."""
    turns, y = _small()
    few = PlayerModel().fit(turns.iloc[:40], (np.arange(40) < 3).astype(float))
    assert not few.identified_ and "too few verdicts: 3 successes" in str(few.not_identified_)
    flat = PlayerModel().fit(turns.assign(round_index=1), y)
    assert not flat.identified_ and "fatigue covariate never varies" in str(flat.not_identified_)
    separated = PlayerModel().fit(turns, (turns["elapsed_s"] > 60).to_numpy(dtype=float))
    assert abs(separated.coef_["time"]) > 50  # no finite maximum: the coefficient ran off
    assert not separated.identified_ and "likelihood is flat" in str(separated.not_identified_)
