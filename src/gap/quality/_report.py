"""``gap quality report``: a short text summary and four PNG plots of a ``gap quality fit`` folder.

Plots are drawn on matplotlib ``Figure`` objects with the Agg canvas, never through pyplot's global
state, so reports can be made from threads and tests without a display.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gap._fs import file_mode
from gap.quality._filter import kept_rate_curve
from gap.quality._pipeline import QualityResult
from gap.quality._player_model import SHARED

FIGURES = ("reliability.png", "posterior.png", "kept_rate.png", "ability_points.png")


@dataclass(frozen=True, slots=True)
class Report:
    text: str
    figures: list[Path]


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.fchmod(fd, file_mode())  # the umask's mode, not mkstemp's 0600
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _fmt(value: object, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return format(value, spec)


def kept_by_hint_text(split: dict[str, dict[str, float]]) -> str:
    """The report's line on hinted and unhinted questions ("" when the turns had no ``hinted``)."""
    if not split:
        return ""
    parts = [
        f"{name} {_fmt(float(row['rate']) if row['questions'] else None)} "
        f"({int(row['kept'])} of {int(row['questions'])})"
        for name, row in split.items()
    ]
    return "kept untainted Wrongs per untainted question: " + ", ".join(parts)


def summary_text(result: QualityResult) -> str:
    """The summary a human reads first: counts, pi, the filter, players, the player model."""
    s = result.summary
    rel = s.get("reliability", {})
    theta = float(s.get("theta", 0.8))
    cand = int(s.get("n_candidates", 0))
    kept = int(s.get("n_kept", 0))
    players = result.players
    low = int((players["informedness"] < 0.2).sum()) if "informedness" in players else 0
    lines = [
        f"GAP quality report (gap {s.get('gap_version', '?')})",
        f"turns: {s.get('n_turns', 0)} (tainted {s.get('n_tainted', 0)}, "
        f"untainted {s.get('n_untainted', 0)}); players {s.get('n_players', 0)}; "
        f"images {s.get('n_images', 0)}",
        f"pi = P(model wrong) on untainted questions: {_fmt(rel.get('pi'))} "
        f"(prior of M: {rel.get('pi_by', '?')})",
        f"kept at theta={theta:.2f}: {kept} of {cand} untainted Wrong verdicts"
        + (f" ({100 * kept / cand:.1f}%)" if cand else ""),
        f"players: median a {_fmt(players['a'].median())}, median b {_fmt(players['b'].median())}, "
        f"{low} with informedness a - b < 0.2",
    ]
    hint_line = kept_by_hint_text(s.get("kept_by_hint") or {})
    if hint_line:
        lines.append(hint_line)
    model = s.get("player_model")
    if model and not model.get("identified", True):
        lines.append(
            f"player model: not identifiable from these data ({model.get('not_identified')}); "
            "no coefficients shown"
        )
    elif model:
        coef = model["coef"]
        coefs = ", ".join(
            f"{name} {_fmt(coef[name]['coef'])} ± {_fmt(coef[name]['se'])}" for name in SHARED if name in coef
        )
        lines.append(f"player model: {coefs}; log-likelihood {_fmt(model['loglik'], '.1f')}")
    else:
        lines.append("player model: not fitted (needs elapsed_s, round_index and both kept and unkept turns)")
    top = players.sort_values("points", ascending=False).head(5)
    lines.append(
        "top players by points: " + ", ".join(f"{row.player_id} {row.points:.0f}" for row in top.itertuples())
    )
    return "\n".join(lines)


def render_report(folder: str | os.PathLike[str]) -> Report:
    """Read a ``gap quality fit`` folder, write the four plots into it, return text and paths."""
    root = Path(folder)
    result = QualityResult.read(root)
    theta = float(result.summary.get("theta", 0.8))
    turns, players = result.turns, result.players
    cand = turns[(turns["pool"] == "untainted") & (turns["verdict"] == "wrong")]["p_wrong"].to_numpy()
    paths: list[Path] = []

    fig = Figure(figsize=(5, 4.5))
    ax = fig.add_subplot()
    size = 8 + 40 * np.sqrt(players["n_tainted"] / max(players["n_tainted"].max(), 1))
    pts = ax.scatter(
        players["b"], players["a"], s=size, c=players["informedness"], cmap="viridis", vmin=-1, vmax=1
    )
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="false-alarm rate b",
        ylabel="sensitivity a",
        title="Player reliability (size: tainted turns)",
    )
    fig.colorbar(pts, ax=ax, label="informedness a - b")
    paths.append(_save(fig, root / FIGURES[0]))

    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    ax.hist(cand, bins=40, range=(0.0, 1.0), color="#4c72b0")
    ax.axvline(theta, color="#c44e52", label=f"theta = {theta:.2f}")
    ax.set(xlabel="P(model wrong | verdicts)", ylabel="untainted Wrong verdicts", title="Posterior")
    ax.legend()
    paths.append(_save(fig, root / FIGURES[1]))

    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    grid = np.linspace(0, 1, 101)
    ax.plot(grid, kept_rate_curve(cand, grid), color="#4c72b0")
    ax.axvline(theta, color="#c44e52", ls="--")
    ax.set(xlabel="theta", ylabel="share kept", ylim=(0, 1.02), title="Kept rate vs theta")
    paths.append(_save(fig, root / FIGURES[2]))

    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    if "ability" in players and pd.to_numeric(players["ability"], errors="coerce").notna().any():
        ax.scatter(players["ability"], players["points"], s=10, alpha=0.6, color="#55a868")
        ax.set(xlabel="ability A (player model)", ylabel="points", title="Ability vs points")
    else:
        ax.text(0.5, 0.5, "no player model (see the summary)", ha="center", va="center")
        ax.set_axis_off()
    paths.append(_save(fig, root / FIGURES[3]))
    return Report(text=summary_text(result), figures=paths)
