"""Simulated players: their population, their learning, and whole sessions against a real `gap serve`."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from fixtures.processes import stop, wait_until_answers
from fixtures.server import free_port
from gap.cli import app
from gap.config import get_settings
from gap.db.engine import make_engine, make_sessionmaker, transaction
from gap.db.migrate import upgrade
from gap.db.models import GameSession, Image, Player, Round, Turn
from gap.errors import GameServerError, InputError
from gap.lab import players as lab_players
from gap.lab import world
from gap.lab.players import PlayerSpec, PlayLog, TypeBandit, population, rates_at

MIX = {"careful": 3.0, "careless": 1.0, "spammer": 2.0}


def test_population_follows_the_mix_and_the_kinds_priors() -> None:
    people = population(6, seed=3, mix=MIX)
    assert Counter(p.kind for p in people) == {"careful": 3, "careless": 1, "spammer": 2}
    assert population(6, seed=3, mix=MIX) == people
    assert population(6, seed=4, mix=MIX) != people
    large = population(400, seed=1)
    assert Counter(p.kind for p in large) == {"careful": 348, "careless": 40, "spammer": 12}
    careful = [p for p in large if p.kind == "careful"]
    assert 0.85 < sum(p.a for p in careful) / len(careful) < 0.95  # Beta(18, 2): mean 0.9
    assert 0.04 < sum(p.b for p in careful) / len(careful) < 0.11  # Beta(1.5, 18.5): mean 0.075
    assert all((p.a, p.b) == (1.0, 1.0) for p in large if p.kind == "spammer")
    assert all((p.a, p.b, p.fatigue) == (0.5, 0.5, 0.0) for p in large if p.kind == "careless")
    with pytest.raises(InputError, match="mix must give"):
        population(3, seed=0, mix={"robot": 1.0})


def test_fatigue_brings_rates_towards_chance() -> None:
    tired = PlayerSpec("p", "careful", a=0.9, b=0.1, fatigue=0.1, correction_truth=0.9)
    assert rates_at(tired, 1) == pytest.approx((0.9, 0.1))
    a5, b5 = rates_at(tired, 5)
    assert a5 == pytest.approx(0.5 + 0.4 * 0.9**4) and b5 == pytest.approx(0.5 - 0.4 * 0.9**4)
    spammer = PlayerSpec("s", "spammer", a=1.0, b=1.0, fatigue=0.0, correction_truth=0.0)
    assert rates_at(spammer, 10) == (1.0, 1.0)


def learn(fail_rates: dict[str, float], steps: int, seed: int) -> list[str]:
    """A bandit playing against a fake model that fails each type at its rate; the types it chose."""
    bandit, rng, chosen = TypeBandit(), random.Random(seed), []
    for _ in range(steps):
        qtype = bandit.choose(rng)
        bandit.update(qtype, rng.random() < fail_rates[qtype])
        chosen.append(qtype)
    return chosen


def test_the_bandit_moves_toward_the_types_the_model_fails_on() -> None:
    rates = {"counting": 0.7, "colour": 0.1, "position": 0.15, "existence": 0.05}
    for seed in range(5):
        chosen = learn(rates, 200, seed)
        early, late = chosen[:20].count("counting") / 20, chosen[-50:].count("counting") / 50
        assert late > 0.8 and late > early, (seed, early, late)
    only = TypeBandit()
    assert {only.choose(random.Random(i), ["colour"]) for i in range(5)} == {"colour"}


def test_play_log_round_trips(tmp_path: Path) -> None:
    turn = lab_players.PlayedTurn(
        "t1",
        "p",
        "s",
        True,
        "colour",
        "What colour is the circle?",
        "red",
        True,
        "correct",
        None,
        3.5,
        1,
        "red",
    )
    log = PlayLog([turn])
    log.write(tmp_path / "log.jsonl")
    assert PlayLog.read(tmp_path / "log.jsonl") == log
    frame = log.to_frame()
    assert list(frame["model_right"]) == [True] and list(frame.columns)[:3] == [
        "turn_id",
        "player_id",
        "scene_id",
    ]


@dataclass
class Game:
    url: str
    database_url: str
    scenes: list[world.Scene]


@pytest.fixture
def game(tiny_vlm_dir: Path, tmp_path: Path) -> Iterator[Game]:
    with serve_game(tiny_vlm_dir, tmp_path) as served:
        yield served


@contextlib.contextmanager
def serve_game(tiny_vlm_dir: Path, tmp_path: Path, **settings: str) -> Iterator[Game]:
    """`gap serve` on a fresh SQLite database, the tiny model and 30 lab scenes imported by manifest;
    ``settings``: more GAP_* variables."""
    database_url = f"sqlite:///{tmp_path / 'gap.sqlite3'}"
    upgrade(database_url)
    env = {
        "GAP_DATA_DIR": str(tmp_path / "data"),
        "GAP_DATABASE_URL": database_url,
        "GAP_MODEL": f"transformers:{tiny_vlm_dir}",
        "GAP_MAX_NEW_TOKENS": "4",
        "GAP_SESSION_IMAGES": "6",
        "GAP_ROUND_SECONDS": "5",  # a player out of (simulated) time waits this long at most
        "GAP_RATE_SIGNUPS": "1000/minute",
        "GAP_RATE_QUESTIONS": "100000/minute",
        **settings,
    }
    scenes = world.draw_scenes(30, seed=11)
    manifest = world.write_images(scenes, tmp_path / "scenes")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["images", "import", str(manifest)], env=env)
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    port, log = free_port(), tmp_path / "serve.log"
    gap = Path(sys.executable).parent / "gap"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(gap), "serve", "--port", str(port), "--no-worker"],
            env={**os.environ, **env},
            stdout=out,
            stderr=out,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_answers(process, f"{url}/openapi.json", log, timeout_s=120)
        yield Game(url, database_url, scenes)
    finally:
        stop(process)


@pytest.mark.slow
def test_players_play_whole_sessions_through_the_real_game(game: Game) -> None:
    people = population(6, seed=5, mix=MIX)
    log = asyncio.run(
        lab_players.play(game.url, game.scenes, people, sessions_per_player=2, concurrency=4, seed=5)
    )
    frame = log.to_frame()
    assert len(frame) >= 6 * 2 * 6  # every round ends with a judged turn unless the player ran out of time
    engine = make_engine(game.database_url)
    with transaction(make_sessionmaker(engine)) as db:
        sessions = list(db.scalars(select(GameSession)))
        ended = Counter(r.session_id for r in db.scalars(select(Round)) if r.ended_at is not None)
        rows = db.execute(
            select(Turn, Player.name, Image.meta, Round.index)
            .join(Round, Turn.round_id == Round.id)
            .join(GameSession, Round.session_id == GameSession.id)
            .join(Player, GameSession.player_id == Player.id)
            .join(Image, Round.image_id == Image.id)
        ).all()
        stored = {turn.id: (turn.question, turn.answer, turn.verdict, turn.correction) for turn, *_ in rows}
        where = {turn.id: (name, (meta or {})["scene_id"], index) for turn, name, meta, index in rows}
    engine.dispose()
    assert len(sessions) == 12 and {s.status for s in sessions} == {"finished"}
    assert all(ended[s.id] == s.images_total == 6 for s in sessions)
    judged = {turn_id for turn_id, (*_, verdict, _) in stored.items() if verdict is not None}
    assert judged == set(frame["turn_id"])
    for turn in log.turns:
        question, answer, verdict, correction = stored[turn.turn_id]
        assert (question, answer, verdict, correction) == (
            turn.question, turn.model_answer, turn.verdict, turn.correction
        )  # fmt: skip
        assert where[turn.turn_id] == (turn.player_id, turn.scene_id, turn.image_index)
        assert turn.model_right == world.is_right(turn.qtype, answer or "", turn.truth)
        assert world.parse(next(s for s in game.scenes if s.scene_id == turn.scene_id), question) is not None
    kinds = {p.player_id: p.kind for p in people}
    frame["kind"] = frame["player_id"].map(kinds)
    spam = frame[frame["kind"] == "spammer"]
    assert len(spam) > 0 and set(spam["verdict"]) == {"wrong"} and spam["correction"].notna().all()
    careful = frame[frame["kind"] == "careful"]
    accurate = (careful["verdict"] == "wrong") != careful["model_right"]
    assert len(careful) >= 30 and accurate.mean() > 0.7, accurate.mean()
    assert set(frame["qtype"]) <= set(world.QUESTION_TYPES)
    assert frame["tainted"].any() and not frame["tainted"].all()
    assert frame["sharp"].any() and not frame["sharp"].all()  # rushed or tired questions happen


def _what_was_played(log: PlayLog) -> list[lab_players.PlayedTurn]:
    """The log without the server's ids, which are new on every run."""
    return [replace(turn, turn_id="", session_id="") for turn in log.turns]


@pytest.mark.slow
def test_a_seeded_game_replays_alike_whatever_the_concurrency(tiny_vlm_dir: Path, tmp_path: Path) -> None:
    """Under GAP_SEED, two fresh games (new databases, images imported anew) played by the same
    population, 4 sessions at a time and then 2, serve and log the same turns: what the lab's
    players do does not depend on the order their requests reach the server."""
    people = population(6, seed=5, mix=MIX)
    logs = []
    for concurrency in (4, 2):
        folder = tmp_path / f"c{concurrency}"
        with serve_game(tiny_vlm_dir, folder, GAP_SEED="3") as served:
            logs.append(
                asyncio.run(
                    lab_players.play(
                        served.url,
                        served.scenes,
                        people,
                        sessions_per_player=2,
                        concurrency=concurrency,
                        seed=5,
                    )
                )
            )
    first, second = (_what_was_played(log) for log in logs)
    assert len(first) >= 6 * 2 * 6 and logs[0].cut_rounds == logs[1].cut_rounds == 0
    assert first == second
    assert {t.tainted for t in logs[0].turns} == {True, False}


def test_play_fails_clearly_without_a_server() -> None:
    people = population(1, seed=0)
    with pytest.raises(GameServerError, match="cannot reach the game"):
        asyncio.run(
            lab_players.play(
                f"http://127.0.0.1:{free_port()}", [], people, sessions_per_player=1, concurrency=1, seed=0
            )
        )


def test_focus_falls_with_time_and_fatigue() -> None:
    assert lab_players.focus(0.0, 1) > lab_players.focus(0.9, 1) > lab_players.focus(0.9, 10) > 0.2
    assert lab_players.focus(0.0, 1) == pytest.approx(1 / (1 + math.exp(-lab_players.FOCUS["intercept"])))


def test_true_effects_recover_a_known_time_and_fatigue_effect() -> None:
    """On a log whose model errors follow equation 5 with g = 1, f = 0.2, the truth fit finds them."""
    rng = np.random.default_rng(0)
    turns = []
    for i in range(4000):
        t, index = float(rng.uniform(0, 120)), int(rng.integers(1, 11))
        wrong = rng.random() < 1 / (1 + math.exp(-(0.5 - 1.0 * t / 120 - 0.2 * (index - 1))))
        tainted = i % 5 == 0  # left out: instructed answers are another process
        turns.append(
            lab_players.PlayedTurn(
                f"t{i}", f"p{i % 40}", f"s{i % 60}", tainted, "colour", "q", "a", not wrong or tainted,
                "wrong", None, t, index,
            )
        )  # fmt: skip
    effects = lab_players.true_effects(PlayLog(turns))
    assert effects["identified"] and effects["turns"] == 3200
    assert effects["coef"]["time"] == pytest.approx(1.0, abs=3 * effects["se"]["time"])
    assert effects["coef"]["fatigue"] == pytest.approx(0.2, abs=3 * effects["se"]["fatigue"])
    assert effects["se"]["fatigue"] < 0.05
