"""The theta filter and its calibration checks (METHOD.md section 4).

A turn is kept as an adversarial example when it is untainted, marked Wrong, and its posterior
P(M=0 | verdicts) is at least theta. If the posterior is calibrated, the kept set's precision (the
share whose model answer was truly wrong) is at least theta; :func:`reliability_diagram` checks that.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from gap.errors import InputError
from gap.quality._table import FloatArray, encode_turns

DEFAULT_THETA = 0.8


def _check_theta(theta: float) -> None:
    if not 0.0 < theta < 1.0:
        raise InputError(f"theta must be in (0, 1), got {theta!r}")


def _check_p(p_wrong: npt.ArrayLike, n: int) -> FloatArray:
    p = np.asarray(p_wrong, dtype=np.float64)
    if p.shape != (n,):
        raise InputError(f"p_wrong has shape {p.shape}; expected ({n},), one value per turn")
    return p


def candidates(turns: pd.DataFrame) -> npt.NDArray[np.bool_]:
    """Untainted turns marked Wrong: the only ones the filter may keep."""
    enc = encode_turns(turns)
    return enc.untainted & enc.wrong


def keep_mask(
    turns: pd.DataFrame, p_wrong: npt.ArrayLike, theta: float = DEFAULT_THETA
) -> npt.NDArray[np.bool_]:
    """True for untainted Wrong-marked turns whose posterior is >= theta."""
    _check_theta(theta)
    cand = candidates(turns)
    p = _check_p(p_wrong, len(cand))
    return cand & (p >= theta)


def kept_by_hint(turns: pd.DataFrame, kept: npt.ArrayLike) -> dict[str, dict[str, float]]:
    """Kept untainted Wrongs per untainted question, for hinted and unhinted questions apart.

    ``{"hinted": {"kept": k, "questions": n, "rate": k / n}, "unhinted": {...}}`` from the table's
    ``hinted`` column (0/1, `GAP_HINTS`); empty when the table has none. ``rate`` is NaN for no question.
    """
    if "hinted" not in turns.columns:
        return {}
    keep = np.asarray(kept, dtype=bool)
    untainted = encode_turns(turns).untainted
    hinted = pd.to_numeric(turns["hinted"], errors="coerce").fillna(0).to_numpy() > 0
    split: dict[str, dict[str, float]] = {}
    for name, rows in (("hinted", untainted & hinted), ("unhinted", untainted & ~hinted)):
        n, k = int(rows.sum()), int((keep & rows).sum())
        split[name] = {"kept": k, "questions": n, "rate": k / n if n else float("nan")}
    return split


def kept_rate_curve(p_candidates: npt.ArrayLike, thetas: npt.ArrayLike) -> FloatArray:
    """Share of candidate turns kept at each theta (for the report's kept-rate plot)."""
    p = np.sort(np.asarray(p_candidates, dtype=np.float64))
    t = np.asarray(thetas, dtype=np.float64)
    if p.size == 0:
        return np.zeros(t.shape)
    return 1.0 - np.searchsorted(p, t, side="left") / p.size


def reliability_diagram(p_wrong: npt.ArrayLike, model_wrong: npt.ArrayLike, n_bins: int = 10) -> pd.DataFrame:
    """Mean predicted vs observed P(M=0) in equal-width bins: a calibrated posterior lies on y = x.

    ``model_wrong`` is the truth (1 when the model's answer was wrong), e.g. from a simulation.
    """
    p = np.asarray(p_wrong, dtype=np.float64)
    y = np.asarray(model_wrong, dtype=np.float64)
    if p.shape != y.shape:
        raise InputError(f"p_wrong {p.shape} and model_wrong {y.shape} differ in shape")
    b = np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(b, p, minlength=n_bins) / count
        observed = np.bincount(b, y, minlength=n_bins) / count
        se = np.sqrt(observed * (1 - observed) / count)
    edges = np.linspace(0, 1, n_bins + 1)
    return pd.DataFrame(
        {
            "low": edges[:-1],
            "high": edges[1:],
            "count": count,
            "mean_p": mean_p,
            "observed": observed,
            "se": se,
        }
    )


def kept_precision(p_wrong: npt.ArrayLike, model_wrong: npt.ArrayLike, theta: float) -> tuple[float, int]:
    """Precision of the kept set among the given candidates, and its size."""
    _check_theta(theta)
    p = np.asarray(p_wrong, dtype=np.float64)
    y = np.asarray(model_wrong, dtype=np.float64)
    kept = p >= theta
    n = int(kept.sum())
    return (float(y[kept].mean()) if n else float("nan")), n
