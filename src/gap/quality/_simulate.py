"""Simulated GAP populations with known truth, to check that every estimator recovers it.

The generative model follows the game (METHOD.md sections 1-6): sessions of ``images_per_session``
images, half tainted and half untainted, in random order; inside a round the player asks questions
(think time Gamma-distributed) until marking one Wrong or running out of the 120 s. On tainted images
an answer is instructed wrong with probability tau, and M follows epsilon and delta; on untainted
images the model errs with probability ``sigmoid(c + A_i - B_j - g t - f n)`` (equation 5), so
player ability, image difficulty, time pressure and fatigue are all known. The verdict follows the
player's (a, b). Careful players have a ~ Beta(18, 2), b ~ Beta(1.5, 18.5); careless players answer
at random (a = b = 0.5); spammers always say Wrong (a = b = 1).

Optionally, a share of untainted questions are "popular" questions (a few per image) asked by many
players: their M is drawn once per (image, question), so several verdicts judge one item.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import special

from gap.errors import InputError
from gap.quality._table import POOLS, VERDICTS, write_tables

KINDS = ("careful", "careless", "spammer")


@dataclass(frozen=True, slots=True)
class Simulation:
    """A simulated turns table and the truth behind it."""

    turns: pd.DataFrame
    """The turns table (METHOD columns plus ``question`` keys for popular questions)."""
    truth: pd.DataFrame
    """Per turn: ``turn_id``, ``model_wrong`` (1 when M=0) and ``p_model_wrong`` (its true probability)."""
    players: pd.DataFrame
    """``player_id``, ``kind``, true ``a``, ``b`` and ``ability``."""
    images: pd.DataFrame
    """``image_id``, ``pool``, true ``difficulty`` and ``pi`` = sigmoid(c - B_j)."""
    params: dict[str, float | int | str | None] = field(default_factory=dict)
    """The shared parameters (intercept, time and fatigue coefficients, epsilon, delta, tau, ...)."""

    def write(self, out: str | os.PathLike[str], fmt: str = "parquet") -> list[Path]:
        """Write ``turns``, ``truth``, ``players``, ``images`` tables and ``params.json`` into ``out``."""
        tables = {"turns": self.turns, "truth": self.truth, "players": self.players, "images": self.images}
        paths = write_tables(tables, out, fmt)
        params = Path(out) / "params.json"
        params.write_text(json.dumps(self.params, indent=2, sort_keys=True) + "\n")
        return [*paths, params]


def _distinct(rng: np.random.Generator, rows: int, k: int, size: int) -> npt.NDArray[np.int64]:
    """``rows`` draws of ``k`` distinct integers below ``size`` (vectorised rejection of repeats)."""
    if k == 0:
        return np.zeros((rows, 0), dtype=np.int64)
    if size <= 64:
        return np.argsort(rng.random((rows, size)), axis=1)[:, :k].astype(np.int64)
    out = rng.integers(0, size, (rows, k))
    while True:
        srt = np.sort(out, axis=1)
        dup_rows = np.flatnonzero((np.diff(srt, axis=1) == 0).any(axis=1))
        if dup_rows.size == 0:
            return out
        out[dup_rows] = rng.integers(0, size, (dup_rows.size, k))


def simulate(
    *,
    n_players: int = 200,
    n_images: int = 100,
    n_sessions: int = 1000,
    images_per_session: int = 10,
    tainted_share: float = 0.5,
    taint_rate: float = 0.5,
    epsilon: float = 0.05,
    delta: float = 0.01,
    careless_rate: float = 0.1,
    spammer_rate: float = 0.03,
    ability_sd: float = 1.0,
    difficulty_sd: float = 1.0,
    intercept: float = -1.0,
    time_coef: float = 1.0,
    fatigue_coef: float = 0.05,
    round_seconds: float = 120.0,
    think_seconds: float = 20.0,
    max_questions: int = 8,
    shared_question_rate: float = 0.0,
    questions_per_image: int = 5,
    random_state: int | np.random.Generator | None = None,
    chunk_sessions: int = 25_000,
    on_progress: Callable[[int, int], None] | None = None,
) -> Simulation:
    """Draw a population and play ``n_sessions`` sessions; every player plays at least one when
    ``n_sessions >= n_players`` (the rest go to random players, so activity varies).

    ``random_state`` seeds a private generator; the global RNG is never touched. ``on_progress``
    is called with (sessions done, sessions total) after each chunk.
    """
    _check(n_players >= 1, "n_players", n_players, ">= 1")
    _check(n_images >= 2, "n_images", n_images, ">= 2")
    _check(n_sessions >= 1, "n_sessions", n_sessions, ">= 1")
    _check(images_per_session >= 1, "images_per_session", images_per_session, ">= 1")
    _check(
        careless_rate >= 0 and spammer_rate >= 0 and careless_rate + spammer_rate <= 1,
        "careless_rate + spammer_rate",
        careless_rate + spammer_rate,
        "in [0, 1]",
    )
    _check(0 < delta < epsilon < 0.5, "delta < epsilon", (delta, epsilon), "with 0 < delta < epsilon < 0.5")
    _check(0 <= shared_question_rate <= 1, "shared_question_rate", shared_question_rate, "in [0, 1]")
    _check(max_questions >= 1, "max_questions", max_questions, ">= 1")
    rng = np.random.default_rng(random_state)

    kind = rng.choice(3, size=n_players, p=[1 - careless_rate - spammer_rate, careless_rate, spammer_rate])
    a = np.select([kind == 0, kind == 1], [rng.beta(18.0, 2.0, n_players), 0.5], 1.0)
    b = np.select([kind == 0, kind == 1], [rng.beta(1.5, 18.5, n_players), 0.5], 1.0)
    ability = rng.normal(0.0, ability_sd, n_players)

    n_tainted = round(n_images * tainted_share)
    tainted_img = np.zeros(n_images, dtype=bool)
    tainted_img[rng.permutation(n_images)[:n_tainted]] = True
    difficulty = rng.normal(0.0, difficulty_sd, n_images)
    image_pi = special.expit(intercept - difficulty)
    item_wrong = rng.random((n_images, questions_per_image)) < image_pi[:, None]
    t_pool, u_pool = np.flatnonzero(tainted_img), np.flatnonzero(~tainted_img)
    k_t = images_per_session // 2
    k_u = images_per_session - k_t
    if k_t > t_pool.size or k_u > u_pool.size:
        raise InputError(
            f"a session needs {k_t} tainted and {k_u} untainted images; the pools hold "
            f"{t_pool.size} and {u_pool.size}: raise n_images or lower images_per_session"
        )

    if n_sessions >= n_players:
        owner = np.concatenate([np.arange(n_players), rng.integers(0, n_players, n_sessions - n_players)])
        owner = rng.permutation(owner)
    else:
        owner = rng.choice(n_players, n_sessions, replace=False)

    parts: list[dict[str, npt.NDArray[np.generic]]] = []
    done = 0
    while done < n_sessions:
        s_ids = np.arange(done, min(done + chunk_sessions, n_sessions))
        parts.append(
            _play_chunk(
                rng,
                s_ids,
                owner[s_ids],
                t_pool,
                u_pool,
                k_t,
                k_u,
                tainted_img,
                a,
                b,
                ability,
                difficulty,
                item_wrong,
                taint_rate,
                epsilon,
                delta,
                intercept,
                time_coef,
                fatigue_coef,
                round_seconds,
                think_seconds,
                max_questions,
                shared_question_rate,
            )
        )
        done = int(s_ids[-1]) + 1
        if on_progress is not None:
            on_progress(done, n_sessions)
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    n = cols["player"].size
    player_ids = pd.Index([f"p{i:06d}" for i in range(n_players)])
    image_ids = pd.Index([f"i{j:06d}" for j in range(n_images)])
    question = pd.array(np.where(cols["question"] >= 0, cols["question"], 0), dtype="Int64")
    question[cols["question"] < 0] = pd.NA
    turns = pd.DataFrame(
        {
            "turn_id": np.arange(n, dtype=np.int64),
            "session_id": cols["session"],
            "player_id": pd.Categorical.from_codes(cols["player"], categories=player_ids),
            "image_id": pd.Categorical.from_codes(cols["image"], categories=image_ids),
            "pool": pd.Categorical.from_codes(cols["untainted"].astype(np.int8), categories=list(POOLS)),
            "instructed": cols["instructed"].astype(np.int8),
            "verdict": pd.Categorical.from_codes(cols["wrong"].astype(np.int8), categories=list(VERDICTS)),
            "elapsed_s": cols["elapsed"],
            "round_index": cols["round_index"],
            "question_index": cols["question_index"],
            "question": question,
        }
    )
    truth = pd.DataFrame(
        {
            "turn_id": turns["turn_id"].to_numpy(),
            "model_wrong": cols["model_wrong"].astype(np.int8),
            "p_model_wrong": cols["p_model_wrong"],
        }
    )
    players = pd.DataFrame(
        {"player_id": player_ids, "kind": np.asarray(KINDS)[kind], "a": a, "b": b, "ability": ability}
    )
    images = pd.DataFrame(
        {
            "image_id": image_ids,
            "pool": np.where(tainted_img, POOLS[0], POOLS[1]),
            "difficulty": difficulty,
            "pi": image_pi,
        }
    )
    params: dict[str, float | int | str | None] = {
        "n_players": n_players,
        "n_images": n_images,
        "n_sessions": n_sessions,
        "images_per_session": images_per_session,
        "taint_rate": taint_rate,
        "epsilon": epsilon,
        "delta": delta,
        "intercept": intercept,
        "time_coef": time_coef,
        "fatigue_coef": fatigue_coef,
        "round_seconds": round_seconds,
        "think_seconds": think_seconds,
        "max_questions": max_questions,
        "careless_rate": careless_rate,
        "spammer_rate": spammer_rate,
        "ability_sd": ability_sd,
        "difficulty_sd": difficulty_sd,
        "shared_question_rate": shared_question_rate,
        "questions_per_image": questions_per_image,
        "random_state": random_state if isinstance(random_state, int) else None,
        "fatigue": "images",
    }
    return Simulation(turns=turns, truth=truth, players=players, images=images, params=params)


def _check(ok: bool, name: str, value: object, want: str) -> None:
    if not ok:
        raise InputError(f"simulate: {name} must be {want}, got {value!r}")


def _play_chunk(
    rng: np.random.Generator,
    sessions: npt.NDArray[np.int64],
    owner: npt.NDArray[np.int64],
    t_pool: npt.NDArray[np.int64],
    u_pool: npt.NDArray[np.int64],
    k_t: int,
    k_u: int,
    tainted_img: npt.NDArray[np.bool_],
    a: npt.NDArray[np.float64],
    b: npt.NDArray[np.float64],
    ability: npt.NDArray[np.float64],
    difficulty: npt.NDArray[np.float64],
    item_wrong: npt.NDArray[np.bool_],
    taint_rate: float,
    epsilon: float,
    delta: float,
    intercept: float,
    time_coef: float,
    fatigue_coef: float,
    round_seconds: float,
    think_seconds: float,
    max_questions: int,
    shared_rate: float,
) -> dict[str, npt.NDArray[np.generic]]:
    """Play a block of sessions as (rounds x question slots) arrays; a round stops at its first
    Wrong or at the deadline, so only slots before that become turns."""
    n_s = sessions.size
    per = k_t + k_u
    imgs = np.concatenate(
        [t_pool[_distinct(rng, n_s, k_t, t_pool.size)], u_pool[_distinct(rng, n_s, k_u, u_pool.size)]], axis=1
    )
    order = np.argsort(rng.random((n_s, per)), axis=1)
    image = np.take_along_axis(imgs, order, axis=1).ravel()
    session = np.repeat(sessions, per)
    player = np.repeat(owner, per)
    round_index = np.tile(np.arange(1, per + 1), n_s)
    n_r, k = image.size, max_questions
    tainted = tainted_img[image]

    gaps = rng.gamma(2.0, think_seconds / 2.0, (n_r, k))
    elapsed = np.cumsum(gaps, axis=1)
    in_time = elapsed < round_seconds
    instructed = tainted[:, None] & (rng.random((n_r, k)) < taint_rate)
    p_untainted = special.expit(
        intercept
        + ability[player][:, None]
        - difficulty[image][:, None]
        - time_coef * elapsed / round_seconds
        - fatigue_coef * (round_index - 1)[:, None]
    )
    p_wrong = np.where(tainted[:, None], np.where(instructed, 1 - delta, epsilon), p_untainted)
    model_wrong = rng.random((n_r, k)) < p_wrong
    question = np.full((n_r, k), -1, dtype=np.int64)
    if shared_rate > 0:
        shared = ~tainted[:, None] & (rng.random((n_r, k)) < shared_rate)
        q = rng.integers(0, item_wrong.shape[1], (n_r, k))
        img2 = np.broadcast_to(image[:, None], (n_r, k))
        model_wrong = np.where(shared, item_wrong[img2, q], model_wrong)
        base = special.expit(intercept - difficulty)[img2]
        p_wrong = np.where(shared, base, p_wrong)
        question = np.where(shared, img2 * item_wrong.shape[1] + q, -1)
    wrong = rng.random((n_r, k)) < np.where(model_wrong, a[player][:, None], b[player][:, None])
    asked = in_time & ((np.cumsum(wrong, axis=1) - wrong) == 0)
    r, q_idx = np.nonzero(asked)
    return {
        "session": session[r],
        "player": player[r],
        "image": image[r],
        "untainted": ~tainted[r],
        "instructed": instructed[r, q_idx],
        "wrong": wrong[r, q_idx],
        "elapsed": np.round(elapsed[r, q_idx], 3),
        "round_index": round_index[r],
        "question_index": q_idx + 1,
        "question": question[r, q_idx],
        "model_wrong": model_wrong[r, q_idx],
        "p_model_wrong": p_wrong[r, q_idx],
    }
