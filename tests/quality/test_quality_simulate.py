"""The simulator follows the game's rules and is reproducible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gap.errors import InputError
from gap.quality import Simulation, read_table, simulate, validate_turns


def test_same_seed_same_tables_and_valid_turns(small_sim: Simulation) -> None:
    again = simulate(n_players=60, n_images=40, n_sessions=400, random_state=5)
    pd.testing.assert_frame_equal(small_sim.turns, again.turns)
    pd.testing.assert_frame_equal(small_sim.truth, again.truth)
    other = simulate(n_players=60, n_images=40, n_sessions=400, random_state=6)
    assert not small_sim.turns["verdict"].equals(other.turns["verdict"])
    validate_turns(small_sim.turns)


def test_game_mechanics(small_sim: Simulation) -> None:
    t = small_sim.turns
    rounds = t.groupby(["session_id", "round_index"], observed=True)
    # questions are numbered 1..k inside a round, only the last may be Wrong
    assert (rounds["question_index"].agg(lambda q: list(q) == list(range(1, len(q) + 1)))).all()
    wrong = (t["verdict"] == "wrong").to_numpy()
    last = ~t.duplicated(["session_id", "round_index"], keep="last").to_numpy()
    assert not (wrong & ~last).any()
    assert (t["elapsed_s"] < 120).all() and (t["elapsed_s"] > 0).all()
    assert t.groupby(["session_id", "round_index"], observed=True)["elapsed_s"].is_monotonic_increasing.all()
    # 5 tainted + 5 untainted distinct images per session (sessions with a turn in every round)
    per = t.drop_duplicates(["session_id", "round_index"]).groupby("session_id")
    assert (per["image_id"].nunique() == per.size()).all()
    full = per.size() == 10
    pools = (
        t.drop_duplicates(["session_id", "round_index"])
        .groupby("session_id")["pool"]
        .agg(lambda p: int((p == "tainted").sum()))
    )
    assert (pools[full] == 5).all()
    # only tainted answers can be instructed; spammers always say Wrong
    assert not ((t["pool"] == "untainted") & (t["instructed"] == 1)).any()
    spammers = set(small_sim.players.loc[small_sim.players["kind"] == "spammer", "player_id"])
    assert (t.loc[t["player_id"].astype(str).isin(spammers), "verdict"] == "wrong").all()


def test_tainted_truth_follows_epsilon_and_delta() -> None:
    sim = simulate(n_players=200, n_images=60, n_sessions=4000, random_state=1)
    t, y = sim.turns, sim.truth["model_wrong"].to_numpy()
    tainted = (t["pool"] == "tainted").to_numpy()
    instructed = t["instructed"].to_numpy() == 1
    assert 1 - y[tainted & instructed].mean() == pytest.approx(0.01, abs=0.004)  # delta
    assert y[tainted & ~instructed].mean() == pytest.approx(0.05, abs=0.008)  # epsilon


def test_shared_questions_share_their_truth() -> None:
    sim = simulate(n_players=50, n_images=20, n_sessions=300, shared_question_rate=0.5, random_state=2)
    t = sim.turns.assign(m=sim.truth["model_wrong"].to_numpy())
    shared = t[t["question"].notna()]
    assert len(shared) > 100
    assert (shared.groupby("question")["m"].nunique() == 1).all()
    assert (shared.groupby("question")["image_id"].nunique() == 1).all()


def test_write_and_read_back(tmp_path: Path, small_sim: Simulation) -> None:
    paths = small_sim.write(tmp_path / "out", "csv")
    assert sorted(p.name for p in paths) == [
        "images.csv",
        "params.json",
        "players.csv",
        "truth.csv",
        "turns.csv",
    ]
    back = read_table(tmp_path / "out" / "turns.csv")
    assert len(back) == len(small_sim.turns)
    assert back["player_id"].tolist() == small_sim.turns["player_id"].astype(str).tolist()
    small_sim.write(tmp_path / "pq", "parquet")
    pq = read_table(tmp_path / "pq" / "turns.parquet")
    assert np.array_equal(pq["verdict"].astype(str), small_sim.turns["verdict"].astype(str))
    with pytest.raises(InputError, match="format"):
        small_sim.write(tmp_path / "x", "json")


def test_bad_arguments() -> None:
    with pytest.raises(InputError, match="a session needs 5 tainted and 5 untainted images"):
        simulate(n_images=6)
    with pytest.raises(InputError, match="delta < epsilon"):
        simulate(epsilon=0.01, delta=0.02)
    with pytest.raises(InputError, match="careless_rate"):
        simulate(careless_rate=0.8, spammer_rate=0.5)


def test_progress_is_reported() -> None:
    seen: list[tuple[int, int]] = []
    simulate(
        n_players=10,
        n_images=20,
        n_sessions=50,
        chunk_sessions=20,
        random_state=0,
        on_progress=lambda done, total: seen.append((done, total)),
    )
    assert seen == [(20, 50), (40, 50), (50, 50)]
