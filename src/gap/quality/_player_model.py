"""The player interaction model (METHOD.md section 6, equations 5-6).

    P(S_ijk = 1) = sigmoid(c + A_i - B_j - g t_ijk - f n_ik)

fitted by penalised maximum likelihood (L2 with strength ``alpha`` on A and B) with L-BFGS; the
numerical core (index-based gradients, preconditioning, standard errors) is in :mod:`._glm`.

Small tables do not pin the model down: with a handful of kept verdicts, or with a covariate that
never varies, the likelihood is flat along some direction and the "estimates" are wherever the
optimiser stopped, with standard errors in the millions. :class:`PlayerModel` checks for that after
fitting and says so in ``identified_`` and ``not_identified_``, so reports never print such numbers
as if they were estimates.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Self

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import special

from gap.errors import InputError
from gap.quality._base import BaseEstimator, ConvergenceWarning, Interval
from gap.quality._glm import (
    Design,
    Preconditioner,
    dot,
    linear_predictor,
    logistic_loss,
    minimize_lbfgs,
    standard_errors,
)
from gap.quality._table import FloatArray, check_columns, numeric_column

SHARED = ("intercept", "time", "fatigue")
# Identifiability: each outcome at least this many times (about 3 per shared coefficient), and no
# shared coefficient with a standard error above this (logit scale: +-10 spans any effect size).
MIN_OUTCOMES = 10
MAX_SE = 10.0


def _identification_problem(d: Design, y: FloatArray, weight: FloatArray, se: FloatArray) -> str | None:
    """Why the data cannot pin down the shared coefficients, or None when they can."""
    successes, failures = dot(weight, y), dot(weight, 1.0 - y)
    if min(successes, failures) < MIN_OUTCOMES:
        return (
            f"too few verdicts: {successes:.0f} successes and {failures:.0f} failures "
            f"(at least {MIN_OUTCOMES} of each are needed)"
        )
    if d.n_players < 2 or d.n_images < 2:
        return f"too few players or images ({d.n_players} players, {d.n_images} images; at least 2 each)"
    for name, column in (("time", d.t), ("fatigue", d.n)):
        if np.ptp(column) == 0:
            return f"the {name} covariate never varies, so it cannot be told apart from the intercept"
    if not np.isfinite(se).all() or float(se.max()) > MAX_SE:
        k = int(np.argmax(np.where(np.isfinite(se), se, np.inf)))
        return (
            f"the likelihood is flat along some direction (standard error of {SHARED[k]} {se[k]:.3g} > "
            f"{MAX_SE:g}): an outcome perfectly predicted, or covariates that move together"
        )
    return None


def covariates(
    turns: pd.DataFrame, *, fatigue: str = "images", round_seconds: float = 120.0
) -> tuple[FloatArray, FloatArray]:
    """Time pressure t (share of the round used when asked) and fatigue n for every turn.

    ``fatigue="images"``: images already played in the session (``round_index - 1``).
    ``fatigue="questions"``: questions already asked in the session, counted over the rows given
    (needs ``session_id``; order by ``round_index`` then ``question_index``).
    """
    t = numeric_column(turns, "elapsed_s", minimum=0.0) / round_seconds
    round_index = numeric_column(turns, "round_index", minimum=1.0, integer=True)
    if fatigue == "images":
        return t, round_index - 1.0
    check_columns(turns, ("session_id",))
    q = numeric_column(turns, "question_index", minimum=1.0, integer=True)
    session, _ = pd.factorize(turns["session_id"], use_na_sentinel=True)
    if (session < 0).any():
        raise InputError("column 'session_id' has missing values; fatigue='questions' needs it on every row")
    order = np.lexsort((q, round_index, session))
    s_sorted = session[order]
    start = np.r_[0, np.flatnonzero(np.diff(s_sorted)) + 1]
    first = np.repeat(start, np.diff(np.r_[start, s_sorted.size]))
    n = np.empty(turns.shape[0])
    n[order] = np.arange(s_sorted.size) - first
    return t, n


class PlayerModel(BaseEstimator):
    """Ability, difficulty, time pressure and fatigue: equation (5) by penalised maximum likelihood.

    Parameters
    ----------
    alpha : float, default=1.0
        L2 strength on abilities A and difficulties B (a N(0, 1/alpha) prior). It makes A and B
        identifiable; ``alpha=0`` gives the plain maximum-likelihood fit (the log-likelihood is
        then that of a reference-coded GLM).
    fatigue : {"images", "questions"}, default="images"
        n = images already played in the session, or questions already asked in it.
    round_seconds : float, default=120.0
        Length of a round: t = elapsed_s / round_seconds.
    max_iter : int, default=2000
        L-BFGS iterations at most; hitting it raises a :class:`ConvergenceWarning`.
    tol : float, default=1e-9
        L-BFGS tolerance on the projected gradient of the mean loss.

    Attributes
    ----------
    coef_ : Series
        ``intercept`` c, ``time`` g and ``fatigue`` f.
    se_ : Series
        Their standard errors; ``covariance_`` is the 3 x 3 covariance.
    ability_, ability_se_ : Series indexed by player_id
    difficulty_, difficulty_se_ : Series indexed by image_id
    se_exact_ : bool
        False when A and B errors are conditional (large problems).
    loglik_ : float
        Unpenalised log-likelihood (6) at the optimum.
    identified_ : bool
        Whether the data pin the shared coefficients down (enough of both outcomes, at least two
        players and images, varying covariates, standard errors below 10).
    not_identified_ : str or None
        Why not, in one sentence; then ``coef_`` is wherever the optimiser stopped, not an estimate.
    n_iter_, loss_history_, converged_

    Examples
    --------
    >>> from gap.quality import PlayerModel, simulate
    >>> sim = simulate(n_players=50, n_images=30, n_sessions=400, random_state=0)
    >>> untainted = sim.turns[sim.turns["pool"] == "untainted"]
    >>> truth = sim.truth.loc[untainted.index, "model_wrong"]
    >>> model = PlayerModel().fit(untainted, truth)
    >>> list(model.summary().index)
    ['intercept', 'time', 'fatigue']
    """

    _parameter_constraints = {
        "alpha": [Interval(numbers.Real, 0.0, None)],
        "fatigue": [frozenset({"images", "questions"})],
        "round_seconds": [Interval(numbers.Real, 0.0, None, closed="neither")],
        "max_iter": [Interval(numbers.Integral, 1, None)],
        "tol": [Interval(numbers.Real, 0.0, None, closed="neither")],
    }

    def __init__(
        self,
        *,
        alpha: float = 1.0,
        fatigue: str = "images",
        round_seconds: float = 120.0,
        max_iter: int = 2000,
        tol: float = 1e-9,
    ) -> None:
        self.alpha = alpha
        self.fatigue = fatigue
        self.round_seconds = round_seconds
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, turns: pd.DataFrame, y: npt.ArrayLike, sample_weight: npt.ArrayLike | None = None) -> Self:
        """Fit on turns (``player_id``, ``image_id``, ``elapsed_s``, ``round_index``) and success
        ``y`` in [0, 1] (soft targets allowed). Rows with zero weight still count for fatigue."""
        self._validate_params()
        check_columns(turns, ("player_id", "image_id"))
        n = turns.shape[0]
        target = _as_float(y, n, "y")
        if ((target < 0) | (target > 1)).any():
            raise InputError("y must lie in [0, 1] (1 = the question exposed a model mistake)")
        weight = np.ones(n) if sample_weight is None else _as_float(sample_weight, n, "sample_weight")
        if (weight < 0).any():
            raise InputError("sample_weight must be >= 0")
        t, nf = covariates(turns, fatigue=self.fatigue, round_seconds=self.round_seconds)
        rows = np.flatnonzero(weight > 0)
        if rows.size == 0:
            raise InputError("PlayerModel.fit needs at least one row with positive weight")
        player, players = pd.factorize(turns["player_id"].to_numpy()[rows], use_na_sentinel=True)
        image, images = pd.factorize(turns["image_id"].to_numpy()[rows], use_na_sentinel=True)
        if (player < 0).any() or (image < 0).any():
            raise InputError("player_id and image_id must not be missing")
        d = Design(
            player.astype(np.int64), image.astype(np.int64), t[rows], nf[rows], len(players), len(images)
        )
        y_r, w_r = target[rows], weight[rows]
        coef0 = np.zeros(d.n_params)
        mean = float(np.clip(dot(w_r, y_r) / w_r.sum(), 1e-6, 1 - 1e-6))
        coef0[0] = special.logit(mean)
        pre = Preconditioner(d, w_r, self.alpha, curvature=mean * (1 - mean))
        coef, history, n_iter, ok = minimize_lbfgs(
            lambda c: logistic_loss(c, d, y_r, w_r, self.alpha),
            coef0,
            pre,
            scale=float(w_r.sum()),
            max_iter=self.max_iter,
            tol=self.tol,
        )
        if not ok:
            warnings.warn(
                f"PlayerModel: L-BFGS stopped after {n_iter} iterations without meeting tol={self.tol:g}",
                ConvergenceWarning,
                stacklevel=2,
            )
        cov, se_r, exact = standard_errors(coef, d, w_r, self.alpha)
        eta = linear_predictor(coef, d)
        se = np.sqrt(np.maximum(np.diag(cov), 0.0))
        self.coef_ = pd.Series(coef[:3], index=list(SHARED), name="coef")
        self.covariance_ = pd.DataFrame(cov, index=list(SHARED), columns=list(SHARED))
        self.se_ = pd.Series(se, index=list(SHARED), name="se")
        self.not_identified_ = _identification_problem(d, y_r, w_r, se)
        self.identified_ = self.not_identified_ is None
        n_p = d.n_players
        self.ability_ = pd.Series(
            coef[3 : 3 + n_p], index=pd.Index(players, name="player_id"), name="ability"
        )
        self.ability_se_ = pd.Series(se_r[:n_p], index=self.ability_.index, name="ability_se")
        self.difficulty_ = pd.Series(
            coef[3 + n_p :], index=pd.Index(images, name="image_id"), name="difficulty"
        )
        self.difficulty_se_ = pd.Series(se_r[n_p:], index=self.difficulty_.index, name="difficulty_se")
        self.se_exact_ = exact
        self.loglik_ = dot(w_r, y_r * eta - np.logaddexp(0.0, eta))
        self.n_iter_ = n_iter
        self.loss_history_ = history
        self.converged_ = ok
        return self

    def decision_function(self, turns: pd.DataFrame) -> FloatArray:
        """The linear predictor; players or images the fit never saw count as average (0)."""
        self._check_is_fitted("coef_")
        check_columns(turns, ("player_id", "image_id"))
        t, n = covariates(turns, fatigue=self.fatigue, round_seconds=self.round_seconds)
        pi = pd.Index(self.ability_.index).get_indexer(turns["player_id"].to_numpy())
        ii = pd.Index(self.difficulty_.index).get_indexer(turns["image_id"].to_numpy())
        a = np.where(pi >= 0, self.ability_.to_numpy()[pi], 0.0)
        b = np.where(ii >= 0, self.difficulty_.to_numpy()[ii], 0.0)
        c, g, f = self.coef_.to_numpy()
        return np.asarray(c + a - b - g * t - f * n, dtype=np.float64)

    def predict_proba(self, turns: pd.DataFrame) -> FloatArray:
        """P(S = 1) for every row (equation 5)."""
        return np.asarray(special.expit(self.decision_function(turns)), dtype=np.float64)

    def summary(self) -> pd.DataFrame:
        """Shared coefficients with standard errors, z and two-sided p-values."""
        self._check_is_fitted("coef_")
        z = self.coef_ / self.se_
        from scipy import stats

        return pd.DataFrame({"coef": self.coef_, "se": self.se_, "z": z, "p": 2 * stats.norm.sf(np.abs(z))})


def _as_float(values: npt.ArrayLike, n: int, name: str) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.shape != (n,):
        raise InputError(f"{name} has {arr.size} values; the turns table has {n} rows")
    if not np.isfinite(arr).all():
        raise InputError(f"{name} must be finite numbers")
    return arr
