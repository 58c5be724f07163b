"""Back into the game: base + adapter through the transformers backend, named in every stored turn."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from fixtures.game import login, seed_images
from gap.config import Settings
from gap.db.engine import make_engine, make_sessionmaker, transaction
from gap.db.models import Turn
from gap.errors import ConfigError
from gap.models.factory import load_model
from gap.models.transformers_backend import adapter_label

pytestmark = [
    pytest.mark.slow,
    pytest.mark.db,
    pytest.mark.filterwarnings("ignore:Setting `save_embedding_layers`"),
]


def test_a_game_session_is_answered_by_base_plus_adapter(
    trained: Callable[[str], Path],
    family_dir: Callable[[str], Path],
    settings: Settings,
    make_client: Any,
) -> None:
    adapter = trained("idefics3")
    model = load_model(f"transformers:{family_dir('idefics3')}", Settings(model_adapter=str(adapter)))
    label = adapter_label(str(adapter))
    assert label.startswith(adapter.name + "@") and len(label) == len(adapter.name) + 9
    assert model.name.endswith(f"+adapter:{label}")
    seed_images(settings)
    client = make_client(model, rng=random.Random(3))
    auth = login(client)
    session = client.post("/api/sessions", headers=auth).json()
    for _ in range(40):
        state = client.get(f"/api/sessions/{session['session_id']}", headers=auth).json()
        if state["status"] == "finished":
            break
        asked = client.post(
            f"/api/rounds/{state['round']['round_id']}/questions",
            headers=auth,
            json={"question": "What is it?"},
        )
        assert asked.status_code == 201, asked.text
        assert asked.json()["answer"].strip()
        verdict = client.post(
            f"/api/turns/{asked.json()['turn_id']}/verdict", headers=auth, json={"verdict": "wrong"}
        )
        assert verdict.status_code == 200, verdict.text
    assert state["status"] == "finished"
    engine = make_engine(settings.resolved_database_url)
    with transaction(make_sessionmaker(engine)) as db:
        names = set(db.scalars(select(Turn.model)))
    engine.dispose()
    assert names == {model.name}  # every answer names the base and the exact adapter


def test_adapter_settings_errors(tmp_path: Path, family_dir: Callable[[str], Path]) -> None:
    with pytest.raises(ConfigError, match="not a LoRA adapter folder"):
        load_model(f"transformers:{family_dir('idefics3')}", Settings(model_adapter=str(tmp_path)))
    with pytest.raises(ConfigError, match="vllm serve BASE --enable-lora"):
        load_model("openai:gap", Settings(model_adapter=str(tmp_path)))


def test_serve_and_demo_take_an_adapter() -> None:
    from typer.testing import CliRunner

    from gap.cli import app

    for command in ("serve", "demo"):
        result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
        assert "--adapter" in result.output
