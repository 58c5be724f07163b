"""One quality pass over a turns table: posteriors, the filter, points, the player model.

This is what ``gap quality fit`` runs and writes to a folder: ``turns``, ``players`` and ``images``
tables plus ``summary.json`` (every number with the options that produced it, for audit).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import gap
from gap._fs import file_mode
from gap.errors import InputError
from gap.game.rules import POINTS_PER_CATCH
from gap.quality._filter import DEFAULT_THETA, keep_mask, kept_by_hint
from gap.quality._player_model import PlayerModel
from gap.quality._reliability import ReliabilityEstimator
from gap.quality._table import (
    encode_turns,
    read_table,
    table_format,
    validate_turns,
    write_tables,
)

SUMMARY = "summary.json"


@dataclass(frozen=True, slots=True)
class QualityResult:
    """Outputs of :func:`fit_quality`."""

    turns: pd.DataFrame
    """``turn_id``, ``player_id``, ``image_id``, ``pool``, ``verdict``, ``p_wrong``, ``kept`` (and
    ``hinted`` when the input has it)."""
    players: pd.DataFrame
    """``player_id``, ``a``, ``b``, ``informedness`` (a - b), counts, ``points``, ``ability``,
    ``ability_se``."""
    images: pd.DataFrame
    """``image_id``, ``pool``, ``n_turns``, ``n_kept``, ``difficulty``, ``difficulty_se``."""
    summary: dict[str, Any] = field(default_factory=dict)
    """Counts, pi, priors, coefficients with standard errors, and the options used."""

    def write(self, out: str | os.PathLike[str], fmt: str = "csv") -> list[Path]:
        """Write the three tables as ``fmt`` ("csv" or "parquet") and ``summary.json`` into ``out``."""
        tables = {"turns": self.turns, "players": self.players, "images": self.images}
        paths = write_tables(tables, out, fmt)
        paths.append(_write_json(self.summary, Path(out) / SUMMARY))
        return paths

    @classmethod
    def read(cls, folder: str | os.PathLike[str]) -> QualityResult:
        """Read what :meth:`write` wrote (either format)."""
        root = Path(folder)
        summary_path = root / SUMMARY
        if not summary_path.is_file():
            raise InputError(f"{root}: no {SUMMARY}; is this the output folder of `gap quality fit`?")
        fmt = "parquet" if (root / "turns.parquet").is_file() else "csv"
        tables = {name: read_table(root / f"{name}.{fmt}") for name in ("turns", "players", "images")}
        return cls(summary=json.loads(summary_path.read_text()), **tables)


def _write_json(data: dict[str, Any], path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.fchmod(fd, file_mode())  # the umask's mode, not mkstemp's 0600
    with os.fdopen(fd, "w") as fh:
        json.dump(_clean(data), fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)
    return path


def _clean(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def fit_quality(
    turns: pd.DataFrame,
    *,
    theta: float = DEFAULT_THETA,
    estimator: ReliabilityEstimator | None = None,
    player_model: PlayerModel | None = None,
) -> QualityResult:
    """Fit reliability, keep turns at ``theta``, price them, and fit the player model.

    The player model's success is a kept Wrong verdict (METHOD.md section 6) on untainted turns;
    it needs ``elapsed_s`` and ``round_index`` and is skipped (NaN abilities) without them. When
    the data cannot identify it (:attr:`PlayerModel.identified_`), the summary says why and the
    abilities and difficulties are NaN.
    """
    validate_turns(turns)
    if turns.empty:
        raise InputError("the turns table is empty: nothing to fit")
    est = estimator if estimator is not None else ReliabilityEstimator()
    p_wrong = est.fit_predict_proba(turns)
    kept = keep_mask(turns, p_wrong, theta)
    enc = encode_turns(turns)
    n_players, n_images = len(enc.players), len(enc.images)
    turn_id = turns["turn_id"].to_numpy() if "turn_id" in turns.columns else np.arange(len(turns))
    candidate = enc.untainted & enc.wrong
    catch = ~enc.untainted & enc.instructed & enc.wrong
    value = np.where(candidate, POINTS_PER_CATCH * p_wrong, np.where(catch, POINTS_PER_CATCH, 0.0))
    out_turns = pd.DataFrame(
        {
            "turn_id": turn_id,
            "player_id": enc.players[enc.player],
            "image_id": enc.images[enc.image],
            "pool": np.where(enc.untainted, "untainted", "tainted"),
            "verdict": np.where(enc.wrong, "wrong", "correct"),
            "p_wrong": p_wrong,
            "kept": kept,
        }
    )
    if "hinted" in turns.columns:
        out_turns["hinted"] = (
            pd.to_numeric(turns["hinted"], errors="coerce").fillna(0).astype(np.int8).to_numpy()
        )

    players = est.players_.copy()
    players["points"] = np.bincount(enc.player, value, minlength=n_players)
    players["n_kept"] = np.bincount(enc.player[kept], minlength=n_players)
    images = pd.DataFrame(
        {
            "pool": np.where(
                np.bincount(enc.image, enc.untainted, minlength=n_images) > 0, "untainted", "tainted"
            ),
            "n_turns": np.bincount(enc.image, minlength=n_images),
            "n_kept": np.bincount(enc.image[kept], minlength=n_images),
        },
        index=pd.Index(enc.images, name="image_id"),
    )
    model_summary: dict[str, Any] | None = None
    # The player model needs both outcomes among untainted turns: with no kept turn (or only kept
    # ones) the likelihood has no maximum and the coefficients would run off to infinity.
    both_outcomes = bool(kept.any() and (enc.untainted & ~kept).any())
    if {"elapsed_s", "round_index"} <= set(turns.columns) and both_outcomes:
        pm = player_model if player_model is not None else PlayerModel()
        pm.fit(turns, kept.astype(np.float64), sample_weight=enc.untainted.astype(np.float64))
        if pm.identified_:
            players = players.join(pm.ability_.rename("ability")).join(pm.ability_se_.rename("ability_se"))
            images = images.join(pm.difficulty_.rename("difficulty")).join(
                pm.difficulty_se_.rename("difficulty_se")
            )
        model_summary = {
            "params": pm.get_params(),
            "identified": pm.identified_,
            "not_identified": pm.not_identified_,
            "coef": {name: {"coef": pm.coef_[name], "se": pm.se_[name]} for name in pm.coef_.index},
            "loglik": pm.loglik_,
            "n_iter": pm.n_iter_,
            "converged": pm.converged_,
            "se_exact": pm.se_exact_,
        }
    if model_summary is None or not model_summary["identified"]:
        for column in ("ability", "ability_se"):
            players[column] = np.nan
        for column in ("difficulty", "difficulty_se"):
            images[column] = np.nan

    params = {k: v for k, v in est.get_params().items() if k != "embedder"}
    summary: dict[str, Any] = {
        "gap_version": gap.__version__,
        "theta": theta,
        "n_turns": int(enc.n),
        "n_tainted": int((~enc.untainted).sum()),
        "n_untainted": int(enc.untainted.sum()),
        "n_candidates": int(candidate.sum()),
        "n_kept": int(kept.sum()),
        "n_players": n_players,
        "n_images": n_images,
        "reliability": {
            "params": params,
            "pi": est.pi_,
            "pi_by": est.pi_by_,
            "prior_mean": list(est.prior_mean_),
            "prior_a": est.prior_a_,
            "prior_b": est.prior_b_,
            "pi_coef": None if est.pi_coef_ is None else est.pi_coef_.to_dict(),
            "n_items": est.n_items_,
            "n_iter": est.n_iter_,
            "converged": est.converged_,
            "loss_history": est.loss_history_,
        },
        "player_model": model_summary,
        "kept_by_hint": kept_by_hint(turns, kept),
    }
    return QualityResult(
        turns=out_turns,
        players=players.reset_index(),
        images=images.reset_index(),
        summary=summary,
    )


def read_turns(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A turns table from CSV or Parquet, checked (with ``turn_id``, as the CLI needs it)."""
    turns = read_table(path)
    if "turn_id" not in turns.columns:
        raise InputError(f"{path}: the turns table needs a 'turn_id' column")
    return validate_turns(turns)


def output_format(path: str | os.PathLike[str]) -> str:
    """The table format of an input file, used for the outputs too."""
    return table_format(Path(path))
