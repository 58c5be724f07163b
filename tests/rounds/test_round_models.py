"""A replica's round models: at most ``GAP_MODEL_CACHE_SIZE`` loaded (an evicted one reloads for the
session that still needs it), and the current round's model warmed in the background before its
first question."""

from __future__ import annotations

import gc
import random
import shutil
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fixtures.game import login, seed_images
from gap.config import Settings
from gap.db.engine import make_engine, make_sessionmaker, transaction
from gap.db.models import Turn
from gap.models import factory
from gap.models.base import ChatMessage, ImageInput, VisionChatModel
from gap.services.game import utcnow
from gap.services.rounds import RoundModels, start_round
from gap.web.app import create_app

pytestmark = pytest.mark.db


class Named:
    """A model that only says its name (for the cache's own logic)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.unloaded = False

    def answer(self, image: ImageInput, messages: list[ChatMessage], system: str | None = None) -> str:
        return self.name

    def unload(self) -> None:
        self.unloaded = True


def test_the_cache_evicts_least_recently_used_models_no_session_needs() -> None:
    loads: list[str] = []
    needed: set[tuple[str, str | None]] = set()

    def load(spec: str, adapter: str | None) -> VisionChatModel:
        loads.append(spec)
        return Named(spec)

    models = RoundModels(load, capacity=2, in_use=lambda: needed)
    a, b = models.get("a", None), models.get("b", None)
    models.get("a", None)  # a is now more recent than b
    needed.add(("b", None))  # but a session still plays b
    models.get("c", None)
    assert models.loaded == [("b", None), ("c", None)] and isinstance(a, Named) and a.unloaded
    needed.clear()
    models.get("a", None)  # nobody needs b, the least recently used: it goes, a reloads
    assert models.loaded == [("c", None), ("a", None)] and isinstance(b, Named) and b.unloaded
    assert loads == ["a", "b", "c", "a"]
    with pytest.raises(ValueError, match="at least 1"):
        RoundModels(load, capacity=0)


def test_warming_loads_once_in_the_background() -> None:
    release = threading.Event()
    loads: list[str] = []

    def load(spec: str, adapter: str | None) -> VisionChatModel:
        release.wait(30)
        loads.append(spec)
        return Named(spec)

    models = RoundModels(load)
    thread = models.warm("a", None)
    assert thread is not None and models.warm("a", None) is None  # already being warmed
    assert models.loaded == []  # still loading: nothing waits for it
    release.set()
    thread.join(30)
    assert models.loaded == [("a", None)] and models.warm("a", None) is None
    models.get("a", None)
    assert loads == ["a"]


@pytest.fixture
def counted_loads(monkeypatch: pytest.MonkeyPatch) -> tuple[Counter[str], threading.Event]:
    """Every round model load a replica does, counted by spec; loads wait for the event (set)."""
    loads: Counter[str] = Counter()
    proceed = threading.Event()
    proceed.set()
    real = factory.load_ready_model

    def counting(spec: str, settings: Settings) -> VisionChatModel:
        assert proceed.wait(60)
        loads[spec] += 1
        return real(spec, settings)

    monkeypatch.setattr(factory, "load_ready_model", counting)
    return loads, proceed


def _open_round(settings: Settings, model: str) -> None:
    engine = make_engine(settings.resolved_database_url)
    with transaction(make_sessionmaker(engine)) as db:
        start_round(db, model=model, adapter=None, note=None, now=utcnow())
    engine.dispose()


def _ask(client: TestClient, auth: dict[str, str], round_id: str) -> str:
    asked = client.post(f"/api/rounds/{round_id}/questions", headers=auth, json={"question": "Red?"})
    assert asked.status_code == 201, asked.text
    turn_id: str = asked.json()["turn_id"]
    judged = client.post(f"/api/turns/{turn_id}/verdict", headers=auth, json={"verdict": "correct"})
    assert judged.status_code == 200, judged.text
    return turn_id


def _model_of(settings: Settings, turn_id: str) -> str:
    engine = make_engine(settings.resolved_database_url)
    with transaction(make_sessionmaker(engine)) as db:
        turn = db.get(Turn, turn_id)
        assert turn is not None and turn.model is not None
        name = turn.model
    engine.dispose()
    return name


def _copies(tiny_vlm_dir: Path, tmp_path: Path, n: int) -> list[str]:
    specs = []
    for i in range(n):
        shutil.copytree(tiny_vlm_dir, tmp_path / f"v{i}")
        specs.append(f"transformers:{tmp_path / f'v{i}'}")
    return specs


def test_three_rounds_keep_two_models_and_an_old_session_reloads(
    settings: Settings,
    tiny_model: VisionChatModel,
    tiny_vlm_dir: Path,
    tmp_path: Path,
    counted_loads: tuple[Counter[str], threading.Event],
) -> None:
    loads, _ = counted_loads
    specs = _copies(tiny_vlm_dir, tmp_path, 3)
    seed_images(settings)
    app = create_app(
        settings.model_copy(update={"max_new_tokens": 4, "model_warm_interval": 0}),
        model=tiny_model,
        rng=random.Random(1),
    )
    models: RoundModels = app.state.context.round_models
    with TestClient(app) as client:
        players: list[tuple[dict[str, str], str]] = []
        for number, spec in enumerate(specs):
            _open_round(settings, spec)
            auth = login(client, f"P{number}")
            round_id = client.post("/api/sessions", headers=auth).json()["round"]["round_id"]
            players.append((auth, round_id))
            assert _model_of(settings, _ask(client, auth, round_id)) == spec
            assert len(models.loaded) <= 2
            if number == 0:
                first = weakref.ref(models.get(spec, None))
        assert [key[0] for key in models.loaded] == specs[1:]  # round 0's went: least recently used
        gc.collect()
        assert first() is None  # nothing holds its weights any more
        # Round 0's session goes on, on its own model, loaded again.
        auth, round_id = players[0]
        assert _model_of(settings, _ask(client, auth, round_id)) == specs[0]
        assert len(models.loaded) == 2 and (specs[0], None) in models.loaded
    assert loads == {specs[0]: 2, specs[1]: 1, specs[2]: 1}


def _wait_for(condition: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)  # polling a state under a deadline


def test_a_new_rounds_model_is_warm_before_its_first_question(
    settings: Settings,
    tiny_model: VisionChatModel,
    tiny_vlm_dir: Path,
    tmp_path: Path,
    counted_loads: tuple[Counter[str], threading.Event],
) -> None:
    loads, proceed = counted_loads
    (spec,) = _copies(tiny_vlm_dir, tmp_path, 1)
    seed_images(settings)
    app = create_app(
        settings.model_copy(update={"max_new_tokens": 4, "model_warm_interval": 0.05}),
        model=tiny_model,
        rng=random.Random(2),
    )
    models: RoundModels = app.state.context.round_models
    proceed.clear()  # the load waits: the replica is warming
    with TestClient(app) as client:
        _open_round(settings, spec)
        _wait_for(lambda: models.warming, "the replica to start warming the round's model")
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"  # warming never unreadies
        proceed.set()
        _wait_for(lambda: (spec, None) in models.loaded, "the warm-up to finish")
        assert loads == {spec: 1}
        auth = login(client)
        round_id = client.post("/api/sessions", headers=auth).json()["round"]["round_id"]
        assert _model_of(settings, _ask(client, auth, round_id)) == spec
    assert loads == {spec: 1}  # the question found it loaded
