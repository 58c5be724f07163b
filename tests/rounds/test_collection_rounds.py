"""`gap rounds start|list|show`: sessions record the round current when they start and keep it; turns
carry their session's round."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from fixtures.game import login, seed_images
from gap.cli import app
from gap.config import Settings, get_settings
from gap.db.engine import make_engine, make_sessionmaker, transaction
from gap.db.models import GameSession, Turn
from gap.models.base import VisionChatModel
from gap.quality import simulate
from gap.services.rounds import turn_ids_of_round

pytestmark = pytest.mark.db


def gap(settings: Settings, *args: str) -> Any:
    get_settings.cache_clear()
    env = {"GAP_DATA_DIR": str(settings.data_dir), "GAP_DATABASE_URL": settings.resolved_database_url}
    return CliRunner().invoke(app, list(args), env=env)


def rounds_of(
    settings: Settings, session_id: str, turn_id: str | None = None
) -> tuple[int | None, int | None]:
    engine = make_engine(settings.resolved_database_url)
    with transaction(make_sessionmaker(engine)) as db:
        session = db.get(GameSession, session_id)
        turn = db.get(Turn, turn_id) if turn_id else None
        assert session is not None
        found = session.collection_round, (turn.collection_round if turn is not None else None)
    engine.dispose()
    return found


def test_a_new_round_reaches_new_sessions_and_spares_running_ones(
    settings: Settings, make_client: Any, tiny_model: VisionChatModel, tiny_vlm_dir: Path, tmp_path: Path
) -> None:
    v0, v1 = tmp_path / "v0", tmp_path / "v1"
    shutil.copytree(tiny_vlm_dir, v0)
    shutil.copytree(tiny_vlm_dir, v1)
    seed_images(settings)
    client = make_client(tiny_model, rng=random.Random(0), max_new_tokens=6)

    def play(name: str) -> tuple[dict[str, str], str, str]:
        auth = login(client, name)
        started = client.post("/api/sessions", headers=auth).json()
        return auth, started["session_id"], started["round"]["round_id"]

    def ask(auth: dict[str, str], round_id: str) -> str:
        asked = client.post(
            f"/api/rounds/{round_id}/questions", headers=auth, json={"question": "Is it red?"}
        )
        assert asked.status_code == 201, asked.text
        turn_id: str = asked.json()["turn_id"]
        judged = client.post(f"/api/turns/{turn_id}/verdict", headers=auth, json={"verdict": "correct"})
        assert judged.status_code == 200, judged.text
        return turn_id

    before_auth, before, before_round = play("Before")
    assert rounds_of(settings, before, ask(before_auth, before_round)) == (None, None)

    first = gap(settings, "rounds", "start", "--model", f"transformers:{v0}", "--note", "base")
    assert first.exit_code == 0 and f"round 1 started: transformers:{v0}" in first.output
    ada_auth, ada, ada_round = play("Ada")
    assert rounds_of(settings, ada, ask(ada_auth, ada_round)) == (1, 1)

    second = gap(settings, "rounds", "start", "--model", f"transformers:{v1}")
    assert second.exit_code == 0 and f"round 2 started: transformers:{v1}" in second.output
    # Ada's session started in round 1: it stays there, and so do its new turns.
    assert rounds_of(settings, ada, ask(ada_auth, ada_round)) == (1, 1)
    bob_auth, bob, bob_round = play("Bob")
    assert rounds_of(settings, bob, ask(bob_auth, bob_round)) == (2, 2)

    listed = gap(settings, "rounds", "list", "--json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [(r["number"], r["adapter"], r["sessions"], r["judged"]) for r in rows] == [
        (1, None, 1, 2),
        (2, None, 1, 1),
    ]
    table = gap(settings, "rounds", "list")
    assert "2 round(s); current: 2" in table.output
    shown = gap(settings, "rounds", "show", "1", "--json")
    assert shown.exit_code == 0 and json.loads(shown.stdout) | {"started_at": ""} == {
        "number": 1,
        "model": f"transformers:{v0}",
        "adapter": None,
        "note": "base",
        "started_at": "",
        "sessions": 1,
        "judged": 2,
        "untainted_judged": rows[0]["untainted_judged"],
        "untainted_wrong": 0,
        "current": False,
    }
    fooled = gap(settings, "rounds", "list", "--fooled", "--json")
    assert fooled.exit_code == 0, fooled.output
    for row in json.loads(fooled.stdout):  # one fit over all turns; the rate counts untainted questions
        assert (row["fooled"] is None) == (row["untainted_judged"] == 0)
        assert row["fooled"] is None or row["fooled"]["questions"] == row["untainted_judged"]
    assert gap(settings, "rounds", "list", "--fooled").exit_code == 0
    missing = gap(settings, "rounds", "show", "3")
    assert missing.exit_code == 1 and "no round 3" in missing.output

    # Every judged turn carries its round into the turns table; --round keeps one round's.
    every = tmp_path / "turns.csv"
    assert gap(settings, "turns", "export", str(every)).exit_code == 0
    table = pd.read_csv(every)
    assert sorted(table["collection_round"].fillna(0).astype(int)) == [0, 1, 1, 2]
    one = tmp_path / "round1.parquet"
    exported = gap(settings, "turns", "export", str(one), "--round", "1")
    assert exported.exit_code == 0 and "wrote 2 turn(s)" in exported.output
    assert pd.read_parquet(one)["collection_round"].tolist() == [1, 1]
    assert turn_ids_of_round(make_sessionmaker(make_engine(settings.resolved_database_url)), 2) == {
        str(t) for t in table.loc[table["collection_round"] == 2, "turn_id"]
    }
    refused = gap(
        settings,
        "data",
        "export",
        "-f",
        "llava",
        "-o",
        str(tmp_path / "x"),
        "--records",
        str(one),
        "--round",
        "1",
    )
    assert refused.exit_code == 1 and "--round selects turns in the database" in refused.output


def test_quality_fit_takes_one_rounds_turns(tmp_path: Path) -> None:
    sim = simulate(n_players=30, n_images=20, n_sessions=120, random_state=1)
    turns = sim.turns.assign(collection_round=[1 + (i % 2) for i in range(len(sim.turns))])
    path = tmp_path / "turns.parquet"
    turns.to_parquet(path)
    get_settings.cache_clear()
    env = {"GAP_DATA_DIR": str(tmp_path / "data")}
    result = CliRunner().invoke(
        app, ["quality", "fit", str(path), "--out", str(tmp_path / "fit"), "--round", "2"], env=env
    )
    assert result.exit_code == 0, result.output
    fitted = pd.read_parquet(tmp_path / "fit" / "turns.parquet")
    assert len(fitted) == (turns["collection_round"] == 2).sum()
    assert set(fitted["turn_id"]) == set(turns.loc[turns["collection_round"] == 2, "turn_id"])
    bare = tmp_path / "bare.parquet"
    sim.turns.to_parquet(bare)
    refused = CliRunner().invoke(
        app, ["quality", "fit", str(bare), "--out", str(tmp_path / "fit2"), "--round", "1"], env=env
    )
    assert refused.exit_code == 1 and "no collection_round column" in refused.output


def test_a_round_names_its_adapter(settings: Settings) -> None:
    started = gap(settings, "rounds", "start", "--model", "transformers:base", "--adapter", "runs/r1")
    assert started.exit_code == 0 and "round 1 started: transformers:base + runs/r1" in started.output
    listed = gap(settings, "rounds", "list", "--json")
    assert [(r["model"], r["adapter"], r["sessions"]) for r in json.loads(listed.stdout)] == [
        ("transformers:base", "runs/r1", 0)
    ]


def test_a_round_needs_a_model_spec_that_names_a_backend(settings: Settings) -> None:
    result = gap(settings, "rounds", "start", "--model", "  ")
    assert result.exit_code == 1 and "needs a model spec" in result.output
    unknown = gap(settings, "rounds", "start", "--model", "llama:7b")
    assert unknown.exit_code == 1 and "unknown model spec 'llama:7b'" in unknown.output
    remote = gap(settings, "rounds", "start", "--model", "openai:gap", "--adapter", "runs/r1")
    assert remote.exit_code == 1 and "an adapter needs a transformers: model" in remote.output
    assert json.loads(gap(settings, "rounds", "list", "--json").stdout) == []


def test_both_replicas_switch_to_the_new_rounds_model_and_running_sessions_keep_theirs(
    settings: Settings, make_client: Any, tiny_model: VisionChatModel, tiny_vlm_dir: Path, tmp_path: Path
) -> None:
    """Two apps on one database (replicas): a round's model answers its sessions on either replica."""
    v0, v1 = tmp_path / "v0", tmp_path / "v1"
    shutil.copytree(tiny_vlm_dir, v0)
    shutil.copytree(tiny_vlm_dir, v1)
    seed_images(settings)
    replicas = [make_client(tiny_model, rng=random.Random(i), max_new_tokens=6) for i in range(2)]

    def start(replica: int, name: str) -> tuple[int, dict[str, str], str]:
        auth = login(replicas[replica], name)
        return (
            replica,
            auth,
            replicas[replica].post("/api/sessions", headers=auth).json()["round"]["round_id"],
        )

    def answered_by(player: tuple[int, dict[str, str], str]) -> str | None:
        replica, auth, round_id = player
        client = replicas[replica]
        asked = client.post(
            f"/api/rounds/{round_id}/questions", headers=auth, json={"question": "What is it?"}
        )
        assert asked.status_code == 201, asked.text
        turn_id = asked.json()["turn_id"]
        assert (
            client.post(
                f"/api/turns/{turn_id}/verdict", headers=auth, json={"verdict": "correct"}
            ).status_code
            == 200
        )
        engine = make_engine(settings.resolved_database_url)
        with transaction(make_sessionmaker(engine)) as db:
            turn = db.get(Turn, turn_id)
            assert turn is not None
            model = turn.model
        engine.dispose()
        return model

    assert answered_by(start(0, "Zed")) == tiny_model.name  # no round yet: the replica's own model
    assert gap(settings, "rounds", "start", "--model", f"transformers:{v0}").exit_code == 0
    ada = start(0, "Ada")
    assert answered_by(ada) == f"transformers:{v0}"
    assert gap(settings, "rounds", "start", "--model", f"transformers:{v1}").exit_code == 0
    assert answered_by(start(1, "Bob")) == f"transformers:{v1}"
    assert answered_by(start(0, "Cy")) == f"transformers:{v1}"
    assert answered_by(ada) == f"transformers:{v0}"  # started in round 1, finishes on its model
