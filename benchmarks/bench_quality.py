"""Benchmarks of gap.quality against crowd-kit and statsmodels; prints one table.

    python benchmarks/bench_quality.py            # full run (10 M turns; several minutes)
    python benchmarks/bench_quality.py --quick    # small sizes, a smoke test

Rows:
- reliability + posterior + filter on N simulated turns (default estimator), wall time and accuracy
  at recovering the true M on untainted turns;
- the same against crowd-kit's DawidSkene at growing sizes, up to the largest that finishes within
  the budget; Dawid-Skene gets the tainted turns as gold labels (M from the instruction), i.e. the
  same information;
- the player model (equation 5) at 1 M rows, and against statsmodels' GLM (Binomial, one-hot,
  reference-coded) at the largest size its dense design allows, comparing log-likelihoods.
Ratios compare timings measured in the same run.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from gap.quality import PlayerModel, ReliabilityEstimator, keep_mask, simulate


@dataclass
class Row:
    task: str
    size: str
    method: str
    seconds: float
    metric: str
    note: str = ""


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    gc.collect()
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def sessions_for(turns: int) -> int:
    return max(int(turns / 24), 10)  # the simulator plays ~24 judged turns per session


def bench_reliability(n_turns: int, rows: list[Row]) -> None:
    players = max(min(n_turns // 200, 50_000), 50)
    images = max(min(n_turns // 1000, 10_000), 20)
    sim, t_sim = timed(
        lambda: simulate(n_players=players, n_images=images, n_sessions=sessions_for(n_turns), random_state=0)
    )
    turns, truth = sim.turns, sim.truth["model_wrong"].to_numpy()
    u = (turns["pool"] == "untainted").to_numpy()

    def run() -> tuple[np.ndarray, np.ndarray]:
        p = ReliabilityEstimator().fit_predict_proba(turns)
        return p, keep_mask(turns, p, 0.8)

    (p, kept), t_fit = timed(run)
    acc = ((p[u] >= 0.5) == truth[u]).mean()
    precision = truth[kept].mean()
    rows.append(
        Row(
            "reliability+posterior+filter",
            f"{len(turns):,} turns ({players:,} players)",
            "gap.quality",
            t_fit,
            f"acc {acc:.4f}, kept precision {precision:.3f} at theta 0.8",
            f"simulation {t_sim:.1f}s (not counted)",
        )
    )


def ds_inputs(turns: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series, np.ndarray]:
    u = (turns["pool"] == "untainted").to_numpy()
    task = turns["turn_id"].to_numpy()
    data = pd.DataFrame(
        {"task": task, "worker": turns["player_id"].astype(str), "label": turns["verdict"].astype(str)}
    )
    gold = pd.Series(np.where(turns["instructed"].to_numpy() == 1, "wrong", "correct")[~u], index=task[~u])
    return data, gold, task[u]


def bench_vs_dawid_skene(sizes: list[int], budget: float, rows: list[Row]) -> None:
    from crowdkit.aggregation import DawidSkene

    last: tuple[int, float, float, float, float] | None = None
    for n in sizes:
        players = max(min(n // 200, 50_000), 50)
        images = max(min(n // 1000, 10_000), 20)
        sim = simulate(n_players=players, n_images=images, n_sessions=sessions_for(n), random_state=1)
        turns, truth = sim.turns, sim.truth["model_wrong"].to_numpy()
        u = (turns["pool"] == "untainted").to_numpy()
        p, t_ours = timed(functools.partial(ReliabilityEstimator().fit_predict_proba, turns))
        acc_ours = ((p[u] >= 0.5) == truth[u]).mean()
        data, gold, u_tasks = ds_inputs(turns)
        ds, t_ds = timed(functools.partial(DawidSkene(n_iter=100).fit, data, true_labels=gold))
        labels = ds.labels_.reindex(u_tasks).to_numpy()
        acc_ds = (np.asarray(labels == "wrong") == truth[u]).mean()
        rows.append(
            Row(
                "vs crowd-kit DawidSkene",
                f"{len(turns):,} turns",
                "gap.quality",
                t_ours,
                f"acc {acc_ours:.4f}",
            )
        )
        rows.append(
            Row(
                "vs crowd-kit DawidSkene",
                f"{len(turns):,} turns",
                "crowd-kit DawidSkene",
                t_ds,
                f"acc {acc_ds:.4f}",
                f"{t_ds / t_ours:.1f}x slower",
            )
        )
        last = (len(turns), t_ours, t_ds, acc_ours, acc_ds)
        following = sizes[sizes.index(n) + 1] if n != sizes[-1] else None
        if following is not None and t_ds * following / n > budget:  # crowd-kit scales ~linearly
            break
    if last is not None:
        n, t_ours, t_ds, acc_ours, acc_ds = last
        rows.append(
            Row(
                "vs crowd-kit DawidSkene",
                f"{n:,} turns (largest)",
                "ratio",
                t_ds / t_ours,
                f"gap.quality {t_ds / t_ours:.1f}x faster",
                f"acc {acc_ours:.4f} vs {acc_ds:.4f}",
            )
        )


def player_rows(n: int, players: int, images: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows straight from equation (5), every player and image present."""
    rng = np.random.default_rng(seed)
    p = np.concatenate([np.arange(players), rng.integers(0, players, n - players)])
    j = np.concatenate([rng.permutation(images), rng.integers(0, images, n - images)])[:n]
    ability, difficulty = rng.normal(0, 0.8, players), rng.normal(0, 0.8, images)
    elapsed = rng.uniform(0, 120, n)
    rnd = rng.integers(1, 11, n)
    eta = -1.0 + ability[p] - difficulty[j] - 1.0 * elapsed / 120 - 0.05 * (rnd - 1)
    y = (rng.random(n) < expit(eta)).astype(np.float64)
    turns = pd.DataFrame(
        {
            "player_id": pd.Categorical.from_codes(p, categories=[f"p{i}" for i in range(players)]),
            "image_id": pd.Categorical.from_codes(j, categories=[f"i{k}" for k in range(images)]),
            "elapsed_s": elapsed,
            "round_index": rnd,
        }
    )
    return turns, y


def glm_fit(turns: pd.DataFrame, y: np.ndarray) -> Any:
    import statsmodels.api as sm

    x = pd.concat(
        [
            pd.Series(1.0, index=turns.index, name="intercept"),
            (-turns["elapsed_s"] / 120).rename("time"),
            (-(turns["round_index"] - 1.0)).rename("fatigue"),
            pd.get_dummies(turns["player_id"], drop_first=True, dtype=float),
            -pd.get_dummies(turns["image_id"], drop_first=True, dtype=float),
        ],
        axis=1,
    )
    return sm.GLM(y, x, family=sm.families.Binomial()).fit(tol=1e-10)


def bench_player_model(
    n_big: int, glm_sizes: list[tuple[int, int, int]], budget: float, rows: list[Row]
) -> None:
    players, images = (50_000, 10_000) if n_big >= 1_000_000 else (max(n_big // 20, 10), max(n_big // 100, 5))
    turns, y = player_rows(n_big, players, images, 0)
    model, t_big = timed(lambda: PlayerModel().fit(turns, y))
    rows.append(
        Row(
            "player model (eq. 5)",
            f"{n_big:,} rows ({players:,} players, {images:,} images)",
            "gap.quality",
            t_big,
            f"loglik {model.loglik_:.1f}, {model.n_iter_} L-BFGS iters",
            f"time {model.coef_['time']:.3f}±{model.se_['time']:.3f} (true 1), "
            f"fatigue {model.coef_['fatigue']:.4f}±{model.se_['fatigue']:.4f} (true 0.05)",
        )
    )
    dense_gb = n_big * (players + images + 3) * 8 / 1e9
    rows.append(
        Row(
            "player model (eq. 5)",
            f"{n_big:,} rows",
            "statsmodels GLM",
            float("nan"),
            "not run",
            f"dense one-hot design would need {dense_gb:,.0f} GB",
        )
    )
    last = None
    for n, p, i in glm_sizes:
        turns, y = player_rows(n, p, i, 1)
        ours, t_ours = timed(functools.partial(PlayerModel(alpha=0.0).fit, turns, y))
        glm, t_glm = timed(functools.partial(glm_fit, turns, y))
        rel = abs(ours.loglik_ - glm.llf) / abs(glm.llf)
        rows.append(
            Row(
                "player model vs GLM",
                f"{n:,} rows ({p} players, {i} images)",
                "gap.quality (alpha=0)",
                t_ours,
                f"loglik {ours.loglik_:.4f}",
            )
        )
        rows.append(
            Row(
                "player model vs GLM",
                f"{n:,} rows ({p} players, {i} images)",
                "statsmodels GLM",
                t_glm,
                f"loglik {glm.llf:.4f}",
                f"rel. diff {rel:.1e}; {t_glm / t_ours:.1f}x slower",
            )
        )
        last = (n, t_ours, t_glm, rel)
        following = glm_sizes[glm_sizes.index((n, p, i)) + 1] if (n, p, i) != glm_sizes[-1] else None
        if (
            following is not None
            and t_glm * (following[0] / n) * ((following[1] + following[2]) / (p + i)) ** 2 > budget
        ):
            break  # IRLS on the dense design grows with rows x columns^2
    if last is not None:
        n, t_ours, t_glm, rel = last
        rows.append(
            Row(
                "player model vs GLM",
                f"{n:,} rows (largest)",
                "ratio",
                t_glm / t_ours,
                f"gap.quality {t_glm / t_ours:.1f}x faster",
                f"loglik rel. diff {rel:.1e}",
            )
        )


def print_table(rows: list[Row]) -> None:
    header = ("task", "size", "method", "seconds", "result", "note")
    data = [
        (r.task, r.size, r.method, "-" if np.isnan(r.seconds) else f"{r.seconds:.2f}", r.metric, r.note)
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *data, strict=True)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in data:
        print("| " + " | ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test, ~1 minute)")
    parser.add_argument("--turns", type=int, default=10_000_000, help="turns for the reliability row")
    parser.add_argument("--ds-budget", type=float, default=180.0, help="stop growing crowd-kit past this (s)")
    parser.add_argument(
        "--glm-budget", type=float, default=120.0, help="stop growing statsmodels past this (s)"
    )
    args = parser.parse_args()
    if args.quick:
        turns, ds_sizes, pm_rows = 200_000, [20_000, 60_000], 100_000
        glm_sizes = [(5_000, 100, 30), (15_000, 300, 60)]
    else:
        turns, pm_rows = args.turns, 1_000_000
        ds_sizes = [100_000, 300_000, 1_000_000, 3_000_000, 10_000_000]
        glm_sizes = [(5_000, 100, 30), (15_000, 300, 60), (30_000, 600, 120), (60_000, 1_200, 240)]
    print(
        f"# gap.quality benchmarks: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"numpy {np.__version__}, pandas {pd.__version__}"
    )
    rows: list[Row] = []
    bench_reliability(turns, rows)
    bench_vs_dawid_skene(ds_sizes, args.ds_budget, rows)
    bench_player_model(pm_rows, glm_sizes, args.glm_budget, rows)
    print_table(rows)


if __name__ == "__main__":
    main()
