"""Player reliability, the theta filter, settled points and the player model (METHOD.md sections 2-6).

Pure numpy/scipy: nothing here imports the web or the database. The turns table (one row per judged
turn) is the input contract; :mod:`gap.services.quality` reads it from the database and writes the
settled points back.
"""

from gap.quality._base import ConvergenceWarning, NotFittedError
from gap.quality._filter import (
    DEFAULT_THETA,
    candidates,
    keep_mask,
    kept_by_hint,
    kept_precision,
    kept_rate_curve,
    reliability_diagram,
)
from gap.quality._pipeline import QualityResult, fit_quality, read_turns
from gap.quality._player_model import PlayerModel, covariates
from gap.quality._reliability import ReliabilityEstimator
from gap.quality._report import Report, render_report
from gap.quality._simulate import Simulation, simulate
from gap.quality._table import (
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    encode_turns,
    read_table,
    validate_turns,
    write_table,
)

__all__ = [
    "DEFAULT_THETA",
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "ConvergenceWarning",
    "NotFittedError",
    "PlayerModel",
    "QualityResult",
    "ReliabilityEstimator",
    "Report",
    "Simulation",
    "candidates",
    "covariates",
    "encode_turns",
    "fit_quality",
    "keep_mask",
    "kept_by_hint",
    "kept_precision",
    "kept_rate_curve",
    "read_table",
    "read_turns",
    "reliability_diagram",
    "render_report",
    "simulate",
    "validate_turns",
    "write_table",
]
