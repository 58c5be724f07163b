"""The player interaction model (METHOD.md section 6, equations 5-6).

    P(S_ijk = 1) = sigmoid(c + A_i - B_j - g t_ijk - f n_ik)

fitted by penalised maximum likelihood (L2 with strength ``alpha`` on A and B) with L-BFGS. The
gradient is assembled over integer indices with ``np.bincount``, never a one-hot design, so memory
and time grow with the number of rows, not rows x (players + images). The optimiser works in
diagonally preconditioned coordinates (each parameter scaled by the square root of its curvature,
covariates centred), which keeps L-BFGS to tens of iterations even with 10^5 parameters.

Standard errors come from the inverse Hessian of the penalised objective: exactly for everything on
small problems; on large ones, exactly for the shared coefficients (Schur complement, conjugate
gradients over the sparse ability/difficulty block) and, for A and B, conditional on the rest.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import linalg, optimize, sparse, special
from scipy.sparse import linalg as splinalg

from gap.errors import InputError
from gap.quality._base import BaseEstimator, ConvergenceWarning, Interval
from gap.quality._table import FloatArray, IntArray, check_columns, numeric_column

SHARED = ("intercept", "time", "fatigue")
_DENSE_LIMIT = 1500  # players + images up to which all standard errors are exact


@dataclass(frozen=True, slots=True)
class Design:
    """Rows of equation (5) as indices and covariates: t in [0, 1] of the round, n >= 0."""

    player: IntArray
    image: IntArray
    t: FloatArray
    n: FloatArray
    n_players: int
    n_images: int

    @property
    def n_params(self) -> int:
        return 3 + self.n_players + self.n_images

    def subset(self, rows: npt.NDArray[np.int64]) -> Design:
        return Design(
            self.player[rows], self.image[rows], self.t[rows], self.n[rows], self.n_players, self.n_images
        )


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


def dot(a: FloatArray, b: FloatArray) -> float:
    """Inner product without BLAS: threaded ddot stalls on busy machines, einsum streams."""
    return float(np.einsum("i,i->", a, b))


def linear_predictor(theta: FloatArray, d: Design) -> FloatArray:
    """eta = c + A_i - B_j - g t - f n for every row."""
    c, g, f = theta[0], theta[1], theta[2]
    a = theta[3 : 3 + d.n_players]
    b = theta[3 + d.n_players :]
    return np.asarray(c + a[d.player] - b[d.image] - g * d.t - f * d.n, dtype=np.float64)


def gradient_from_residual(theta: FloatArray, d: Design, r: FloatArray, alpha: float) -> FloatArray:
    """Gradient of sum(loss) + alpha/2 (|A|^2 + |B|^2) given r = d loss / d eta per row."""
    a = theta[3 : 3 + d.n_players]
    b = theta[3 + d.n_players :]
    out = np.empty_like(theta)
    out[0] = r.sum()
    out[1] = -dot(r, d.t)
    out[2] = -dot(r, d.n)
    out[3 : 3 + d.n_players] = np.bincount(d.player, r, minlength=d.n_players) + alpha * a
    out[3 + d.n_players :] = -np.bincount(d.image, r, minlength=d.n_images) + alpha * b
    return out


class Preconditioner:
    """theta <-> x with x scaled by sqrt(curvature) and the covariates centred, so L-BFGS sees a
    roughly unit-diagonal Hessian."""

    def __init__(self, d: Design, weight: FloatArray, alpha: float, curvature: float = 0.25) -> None:
        w = weight * curvature
        total = max(float(weight.sum()), 1e-12)
        self.t_mean = dot(weight, d.t) / total
        self.n_mean = dot(weight, d.n) / total
        floor = 1e-8 * max(float(w.sum()), 1.0)
        s = np.empty(d.n_params)
        s[0] = w.sum()
        s[1] = dot(w, (d.t - self.t_mean) ** 2)
        s[2] = dot(w, (d.n - self.n_mean) ** 2)
        s[3 : 3 + d.n_players] = np.bincount(d.player, w, minlength=d.n_players) + alpha
        s[3 + d.n_players :] = np.bincount(d.image, w, minlength=d.n_images) + alpha
        self.scale = np.sqrt(np.maximum(s, floor) / total)

    def to_theta(self, x: FloatArray) -> FloatArray:
        theta = x / self.scale
        theta[0] += theta[1] * self.t_mean + theta[2] * self.n_mean
        return theta

    def to_x(self, theta: FloatArray) -> FloatArray:
        z = theta.copy()
        z[0] -= theta[1] * self.t_mean + theta[2] * self.n_mean
        return z * self.scale

    def grad_to_x(self, grad: FloatArray) -> FloatArray:
        out = grad.copy()
        out[1] += self.t_mean * grad[0]
        out[2] += self.n_mean * grad[0]
        return out / self.scale


def minimize_lbfgs(
    loss: Callable[[FloatArray], tuple[float, FloatArray]],
    theta0: FloatArray,
    pre: Preconditioner,
    *,
    scale: float,
    max_iter: int,
    tol: float,
) -> tuple[FloatArray, list[float], int, bool]:
    """L-BFGS on loss/scale in preconditioned coordinates; returns theta, history, iterations, success."""
    history: list[float] = []

    def fun(x: FloatArray) -> tuple[float, FloatArray]:
        value, grad = loss(pre.to_theta(x))
        return value / scale, pre.grad_to_x(grad) / scale

    def callback(intermediate_result: optimize.OptimizeResult) -> None:
        history.append(float(intermediate_result.fun))

    res = optimize.minimize(
        fun,
        pre.to_x(theta0),
        jac=True,
        method="L-BFGS-B",
        callback=callback,
        options={"maxiter": max_iter, "gtol": tol, "ftol": tol * 1e-4, "maxcor": 20},
    )
    return pre.to_theta(res.x), history, int(res.nit), bool(res.success)


def logistic_loss(
    theta: FloatArray, d: Design, y: FloatArray, weight: FloatArray, alpha: float
) -> tuple[float, FloatArray]:
    """Penalised negative log-likelihood of equation (6) and its gradient (targets may be soft)."""
    eta = linear_predictor(theta, d)
    nll = dot(weight, np.logaddexp(0.0, eta) - y * eta)
    r = weight * (special.expit(eta) - y)
    penalty = 0.5 * alpha * dot(theta[3:], theta[3:])
    return nll + penalty, gradient_from_residual(theta, d, r, alpha)


def _hessian_parts(
    theta: FloatArray, d: Design, weight: FloatArray, alpha: float
) -> tuple[FloatArray, FloatArray, sparse.csr_matrix]:
    """Blocks of the penalised Hessian: shared 3x3, shared x (A, B), and the sparse (A, B) block."""
    p = special.expit(linear_predictor(theta, d))
    w = weight * p * (1 - p)
    cols = np.stack([np.ones_like(d.t), -d.t, -d.n])  # d eta / d (c, g, f)
    h_ss = np.einsum("in,jn->ij", cols * w, cols)
    h_sr = np.concatenate(
        [
            np.stack([np.bincount(d.player, w * col, minlength=d.n_players) for col in cols]),
            -np.stack([np.bincount(d.image, w * col, minlength=d.n_images) for col in cols]),
        ],
        axis=1,
    )
    n_p, n_i = d.n_players, d.n_images
    diag = (
        np.concatenate([np.bincount(d.player, w, minlength=n_p), np.bincount(d.image, w, minlength=n_i)])
        + alpha
    )
    cross = sparse.coo_matrix((-w, (d.player, d.image)), shape=(n_p, n_i)).tocsr()
    h_rr = sparse.bmat([[sparse.diags(diag[:n_p]), cross], [cross.T, sparse.diags(diag[n_p:])]]).tocsr()
    return h_ss, h_sr, h_rr


def standard_errors(
    theta: FloatArray, d: Design, weight: FloatArray, alpha: float
) -> tuple[FloatArray, FloatArray, bool]:
    """(covariance of c, g, f; standard errors of A then B; whether the A/B errors are exact)."""
    h_ss, h_sr, h_rr = _hessian_parts(theta, d, weight, alpha)
    n_r = h_rr.shape[0]
    if n_r <= _DENSE_LIMIT:
        full = np.zeros((3 + n_r, 3 + n_r))
        full[:3, :3] = h_ss
        full[:3, 3:] = h_sr
        full[3:, :3] = h_sr.T
        full[3:, 3:] = h_rr.toarray()
        try:  # positive definite whenever alpha > 0: Cholesky is fast and exact
            factor = linalg.cho_factor(full)
            cov = linalg.cho_solve(factor, np.eye(full.shape[0]))
        except linalg.LinAlgError:  # alpha = 0: A, B and c are only identified up to shifts
            cov = linalg.pinvh(full)
        return cov[:3, :3], np.sqrt(np.maximum(np.diag(cov)[3:], 0.0)), True
    diag = h_rr.diagonal()
    pre = splinalg.LinearOperator(h_rr.shape, matvec=lambda v: v / diag, dtype=np.float64)
    solved = np.empty((n_r, 3))
    for k in range(3):
        solved[:, k], _ = splinalg.cg(h_rr, h_sr[k], rtol=1e-10, atol=0.0, maxiter=5000, M=pre)
    schur = h_ss - h_sr @ solved
    return linalg.pinvh(schur), 1.0 / np.sqrt(np.maximum(diag, 1e-300)), False


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
        theta0 = np.zeros(d.n_params)
        mean = float(np.clip(dot(w_r, y_r) / w_r.sum(), 1e-6, 1 - 1e-6))
        theta0[0] = special.logit(mean)
        pre = Preconditioner(d, w_r, self.alpha, curvature=mean * (1 - mean))
        theta, history, n_iter, ok = minimize_lbfgs(
            lambda th: logistic_loss(th, d, y_r, w_r, self.alpha),
            theta0,
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
        cov, se_r, exact = standard_errors(theta, d, w_r, self.alpha)
        eta = linear_predictor(theta, d)
        self.coef_ = pd.Series(theta[:3], index=list(SHARED), name="coef")
        self.covariance_ = pd.DataFrame(cov, index=list(SHARED), columns=list(SHARED))
        self.se_ = pd.Series(np.sqrt(np.maximum(np.diag(cov), 0.0)), index=list(SHARED), name="se")
        n_p = d.n_players
        self.ability_ = pd.Series(
            theta[3 : 3 + n_p], index=pd.Index(players, name="player_id"), name="ability"
        )
        self.ability_se_ = pd.Series(se_r[:n_p], index=self.ability_.index, name="ability_se")
        self.difficulty_ = pd.Series(
            theta[3 + n_p :], index=pd.Index(images, name="image_id"), name="difficulty"
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
