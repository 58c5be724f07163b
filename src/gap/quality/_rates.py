"""Player rates from verdicts: the two population priors of :class:`ReliabilityEstimator`.

METHOD.md section 3. A player's tainted verdicts have the likelihood of equations (1)-(2); the rates
(a, b) get a population prior fitted to all players (empirical Bayes), and each player's rates are
posterior means under it. Two priors, one function each:

- :func:`grid_rates`, the nonparametric prior: the Kiefer-Wolfowitz NPMLE on a grid over (a, b),
  fitted by SQUAREM-accelerated EM (:func:`npmle`), with posterior means computed in log space.
- :func:`beta_step`, independent Beta priors: one EM step over the latent M of tainted turns
  (expected counts, then beta-binomial marginal likelihood for the priors, then posterior means).

Both also take "soft" untainted counts (expected counts under the current posterior of M) for
``rates_from="all"``; with ``rates_from="tainted"`` those are zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

from gap.quality._glm import dot
from gap.quality._table import EncodedTurns, FloatArray

EPS = 1e-10
_STRENGTH_BOUNDS = (0.5, 1e4)
# The NPMLE stops when a SQUAREM cycle gains < 1e-8 log-likelihood per player: the posterior means
# are then within ~2e-3 of the fully converged fit, far inside their sampling error.
_NPMLE_TOL = 1e-8
_NPMLE_MAX_ITER = 1000

BetaPair = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Rates:
    """Every player's (a, b) and the population prior they are posterior means under."""

    a: FloatArray
    b: FloatArray
    prior_a: BetaPair | None = None
    """Beta prior of a (``prior="beta"``)."""
    prior_b: BetaPair | None = None
    grid_weight: FloatArray | None = None
    """Mixing weight of each grid point (``prior="grid"``)."""


# --------------------------------------------------------------------------------------------------
# The tainted likelihood (equations 1-2)


def tainted_cells(enc: EncodedTurns, n_players: int) -> FloatArray:
    """Turn counts per (player, instructed, verdict=wrong) cell, shape (players, 2, 2)."""
    t = ~enc.untainted
    code = enc.player[t] * 4 + enc.instructed[t] * 2 + enc.wrong[t]
    return np.bincount(code, minlength=4 * n_players).astype(np.float64).reshape(n_players, 2, 2)


def tainted_nll(cells: FloatArray, a: FloatArray, b: FloatArray, epsilon: float, delta: float) -> float:
    """Negative log-likelihood of the tainted verdicts, equations (1)-(2)."""
    q = np.stack([a * epsilon + b * (1 - epsilon), a * (1 - delta) + b * delta], axis=1)  # P(H=0 | I)
    q = np.clip(q, EPS, 1 - EPS)
    return float(-np.sum(cells[:, :, 1] * np.log(q) + cells[:, :, 0] * np.log1p(-q)))


def tainted_expected_counts(
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
# The nonparametric prior


@dataclass(frozen=True, slots=True)
class Grid:
    """Grid points over (a, b) and the log-likelihood of one count in each count column there."""

    a: FloatArray
    b: FloatArray
    columns: FloatArray
    """Shape (8, points): rows for the counts (I0 correct, I0 wrong, I1 correct, I1 wrong, then
    untainted expected counts M=0 correct, M=0 wrong, M=1 correct, M=1 wrong)."""

    @classmethod
    def build(cls, size: int, epsilon: float, delta: float) -> Grid:
        g = np.linspace(0.005, 0.995, size)
        ga, gb = (x.ravel() for x in np.meshgrid(g, g, indexing="ij"))
        q0 = ga * epsilon + gb * (1 - epsilon)
        q1 = ga * (1 - delta) + gb * delta
        rows = [np.log1p(-q0), np.log(q0), np.log1p(-q1), np.log(q1)]
        rows += [np.log1p(-ga), np.log(ga), np.log1p(-gb), np.log(gb)]
        return cls(ga, gb, np.stack(rows))


def npmle(
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


def grid_rates(
    counts: FloatArray, grid: Grid, weight: FloatArray, max_players: int, rng: np.random.Generator
) -> tuple[Rates, bool]:
    """Posterior-mean (a, b) per player under the NPMLE grid prior, from per-player count columns
    (``counts @ grid.columns`` is each player's log-likelihood at each grid point); whether the
    NPMLE converged.

    The prior's weights are fitted on at most ``max_players`` players drawn at random (plenty to
    pin down a 2-D distribution); the posterior means then cover every player. They are computed
    in log space: a heavy player left out of the draw may have all its likelihood where the prior
    has no mass, and ``likelihood @ weight`` in linear space would underflow to 0 / 0.
    """
    uniq, inverse, mult = np.unique(counts, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    loglik = uniq @ grid.columns
    loglik -= loglik.max(axis=1, keepdims=True)
    observed = uniq.sum(axis=1) > 0
    fit_on = np.where(observed, mult, 0).astype(np.float64)
    if fit_on.sum() > max_players:  # a random subset of players, by multiplicity
        drawn = rng.choice(inverse.size, max_players, replace=False)
        fit_on = np.bincount(inverse[drawn], minlength=uniq.shape[0]).astype(np.float64)
        fit_on[~observed] = 0.0
    ok = True
    use = fit_on > 0
    if use.any():
        weight, n_iter = npmle(np.exp(loglik[use]), fit_on[use], weight, _NPMLE_TOL, _NPMLE_MAX_ITER)
        ok = n_iter < _NPMLE_MAX_ITER
    support = np.flatnonzero(weight > 0)
    log_post = loglik[:, support] + np.log(weight[support])
    log_post -= log_post.max(axis=1, keepdims=True)
    post = np.exp(log_post)
    post /= post.sum(axis=1, keepdims=True)
    a = np.clip((post @ grid.a[support])[inverse], EPS, 1 - EPS)
    b = np.clip((post @ grid.b[support])[inverse], EPS, 1 - EPS)
    return Rates(a, b, grid_weight=weight), ok


# --------------------------------------------------------------------------------------------------
# Beta empirical Bayes (the plain design of METHOD.md section 3)


def fit_beta_prior(k: FloatArray, n: FloatArray, start: tuple[float, float]) -> tuple[float, float]:
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


def beta_posterior_mean(k: FloatArray, n: FloatArray, prior: BetaPair) -> FloatArray:
    """Posterior mean of a rate with k successes out of n under a Beta(alpha, beta) prior."""
    return np.clip((prior[0] + k) / (prior[0] + prior[1] + n), EPS, 1 - EPS)


def beta_step(
    cells: FloatArray,
    soft: FloatArray,
    rates: Rates,
    *,
    epsilon: float,
    delta: float,
    fit_a: bool,
    fit_b: bool,
) -> Rates:
    """One EM step of the Beta-prior rates: expected counts under the current (a, b) (M is latent on
    tainted turns), then the Beta priors that maximise their marginal likelihood (unless fixed),
    then each player's posterior means."""
    assert rates.prior_a is not None and rates.prior_b is not None
    ex = tainted_expected_counts(cells, rates.a, rates.b, epsilon, delta) + soft
    k_a, n_a = ex[:, 1], ex[:, 0] + ex[:, 1]
    k_b, n_b = ex[:, 3], ex[:, 2] + ex[:, 3]
    prior_a = fit_beta_prior(k_a, n_a, rates.prior_a) if fit_a else rates.prior_a
    prior_b = fit_beta_prior(k_b, n_b, rates.prior_b) if fit_b else rates.prior_b
    return Rates(
        beta_posterior_mean(k_a, n_a, prior_a),
        beta_posterior_mean(k_b, n_b, prior_b),
        prior_a=prior_a,
        prior_b=prior_b,
    )
