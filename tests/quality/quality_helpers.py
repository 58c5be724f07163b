"""Shared types of the quality tests (imported by name: tests/quality is on sys.path)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gap.quality import ReliabilityEstimator, Simulation


@dataclass(frozen=True)
class Fitted:
    sim: Simulation
    estimator: ReliabilityEstimator
    p_wrong: npt.NDArray[np.float64]
    untainted: npt.NDArray[np.bool_]
    wrong: npt.NDArray[np.bool_]
    model_wrong: npt.NDArray[np.int8]

    @property
    def candidates(self) -> npt.NDArray[np.bool_]:
        return self.untainted & self.wrong
