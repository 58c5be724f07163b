"""The theta filter and its calibration helpers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gap.errors import InputError
from gap.quality import keep_mask, kept_precision, kept_rate_curve, reliability_diagram


def turns() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "player_id": ["p"] * 4,
            "image_id": ["i"] * 4,
            "pool": ["untainted", "untainted", "tainted", "untainted"],
            "instructed": [0, 0, 1, 0],
            "verdict": ["wrong", "correct", "wrong", "wrong"],
        }
    )


def test_keeps_only_untainted_wrong_at_or_above_theta() -> None:
    p = np.array([0.8, 0.99, 0.99, 0.79])
    assert keep_mask(turns(), p, 0.8).tolist() == [True, False, False, False]


def test_theta_and_shape_are_checked() -> None:
    with pytest.raises(InputError, match="theta"):
        keep_mask(turns(), np.zeros(4), 1.0)
    with pytest.raises(InputError, match="one value per turn"):
        keep_mask(turns(), np.zeros(3), 0.5)


def test_kept_rate_curve() -> None:
    p = np.array([0.1, 0.5, 0.5, 0.9])
    assert kept_rate_curve(p, [0.0, 0.5, 0.6, 1.0]).tolist() == [1.0, 0.75, 0.25, 0.0]
    assert kept_rate_curve([], [0.5]).tolist() == [0.0]


def test_reliability_diagram_and_precision() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(200_000)
    y = rng.random(p.size) < p  # perfectly calibrated by construction
    d = reliability_diagram(p, y)
    assert len(d) == 10 and d["count"].sum() == p.size
    assert np.abs(d["mean_p"] - d["observed"]).max() < 0.01
    precision, n = kept_precision(p, y, 0.8)
    assert n == int((p >= 0.8).sum()) and precision == pytest.approx(0.9, abs=0.01)
