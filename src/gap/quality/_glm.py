"""Penalised logistic regression on integer indices: the numerical core of equation (5).

Rows are (player, image, t, n); the coefficient vector ``coef`` is (c, g, f, A_1..A_P, B_1..B_J) and
the linear predictor ``c + A_i - B_j - g t - f n``. Gradients and Hessian blocks are assembled over the
indices with ``np.bincount``, never a one-hot design, so memory and time grow with the number of
rows, not rows x (players + images). The optimiser works in diagonally preconditioned coordinates
(each parameter scaled by the square root of its curvature, covariates centred), which keeps L-BFGS
to tens of iterations even with 10^5 parameters.

Standard errors come from the inverse Hessian of the penalised objective: exactly for everything on
small problems; on large ones, exactly for the shared coefficients (Schur complement, conjugate
gradients over the sparse ability/difficulty block) and, for A and B, conditional on the rest.

:class:`gap.quality.PlayerModel` fits it to kept verdicts; the ``pi_by="model"`` prior of
:class:`gap.quality.ReliabilityEstimator` fits it to the marginal likelihood of untainted verdicts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import linalg, optimize, sparse, special
from scipy.sparse import linalg as splinalg

from gap.quality._table import FloatArray, IntArray

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


def dot(a: FloatArray, b: FloatArray) -> float:
    """Inner product without BLAS: threaded ddot stalls on busy machines, einsum streams."""
    return float(np.einsum("i,i->", a, b))


def linear_predictor(coef: FloatArray, d: Design) -> FloatArray:
    """eta = c + A_i - B_j - g t - f n for every row."""
    c, g, f = coef[0], coef[1], coef[2]
    a = coef[3 : 3 + d.n_players]
    b = coef[3 + d.n_players :]
    return np.asarray(c + a[d.player] - b[d.image] - g * d.t - f * d.n, dtype=np.float64)


def gradient_from_residual(coef: FloatArray, d: Design, r: FloatArray, alpha: float) -> FloatArray:
    """Gradient of sum(loss) + alpha/2 (|A|^2 + |B|^2) given r = d loss / d eta per row."""
    a = coef[3 : 3 + d.n_players]
    b = coef[3 + d.n_players :]
    out = np.empty_like(coef)
    out[0] = r.sum()
    out[1] = -dot(r, d.t)
    out[2] = -dot(r, d.n)
    out[3 : 3 + d.n_players] = np.bincount(d.player, r, minlength=d.n_players) + alpha * a
    out[3 + d.n_players :] = -np.bincount(d.image, r, minlength=d.n_images) + alpha * b
    return out


class Preconditioner:
    """coef <-> x with x scaled by sqrt(curvature) and the covariates centred, so L-BFGS sees a
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

    def to_coef(self, x: FloatArray) -> FloatArray:
        coef = x / self.scale
        coef[0] += coef[1] * self.t_mean + coef[2] * self.n_mean
        return coef

    def to_x(self, coef: FloatArray) -> FloatArray:
        z = coef.copy()
        z[0] -= coef[1] * self.t_mean + coef[2] * self.n_mean
        return z * self.scale

    def grad_to_x(self, grad: FloatArray) -> FloatArray:
        out = grad.copy()
        out[1] += self.t_mean * grad[0]
        out[2] += self.n_mean * grad[0]
        return out / self.scale


def minimize_lbfgs(
    loss: Callable[[FloatArray], tuple[float, FloatArray]],
    coef0: FloatArray,
    pre: Preconditioner,
    *,
    scale: float,
    max_iter: int,
    tol: float,
) -> tuple[FloatArray, list[float], int, bool]:
    """L-BFGS on loss/scale in preconditioned coordinates; returns coef, history, iterations, success."""
    history: list[float] = []

    def fun(x: FloatArray) -> tuple[float, FloatArray]:
        value, grad = loss(pre.to_coef(x))
        return value / scale, pre.grad_to_x(grad) / scale

    def callback(intermediate_result: optimize.OptimizeResult) -> None:
        history.append(float(intermediate_result.fun))

    res = optimize.minimize(
        fun,
        pre.to_x(coef0),
        jac=True,
        method="L-BFGS-B",
        callback=callback,
        options={"maxiter": max_iter, "gtol": tol, "ftol": tol * 1e-4, "maxcor": 20},
    )
    return pre.to_coef(res.x), history, int(res.nit), bool(res.success)


def logistic_loss(
    coef: FloatArray, d: Design, y: FloatArray, weight: FloatArray, alpha: float
) -> tuple[float, FloatArray]:
    """Penalised negative log-likelihood of equation (6) and its gradient (targets may be soft)."""
    eta = linear_predictor(coef, d)
    nll = dot(weight, np.logaddexp(0.0, eta) - y * eta)
    r = weight * (special.expit(eta) - y)
    penalty = 0.5 * alpha * dot(coef[3:], coef[3:])
    return nll + penalty, gradient_from_residual(coef, d, r, alpha)


def _hessian_parts(
    coef: FloatArray, d: Design, weight: FloatArray, alpha: float
) -> tuple[FloatArray, FloatArray, sparse.csr_matrix]:
    """Blocks of the penalised Hessian: shared 3x3, shared x (A, B), and the sparse (A, B) block."""
    p = special.expit(linear_predictor(coef, d))
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
    coef: FloatArray, d: Design, weight: FloatArray, alpha: float
) -> tuple[FloatArray, FloatArray, bool]:
    """(covariance of c, g, f; standard errors of A then B; whether the A/B errors are exact)."""
    h_ss, h_sr, h_rr = _hessian_parts(coef, d, weight, alpha)
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
