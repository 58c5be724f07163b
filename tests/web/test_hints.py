"""Question hints (`GAP_HINTS`): off by default, one per round from the model, marked through to the
turns export, the data export's provenance and the quality report's hinted/unhinted split."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fixtures.game import ManualClock, assert_no_leak, login, seed_images
from fixtures.hints import HintingModel
from fixtures.recording_server import recording_server
from gap.cli import app
from gap.config import Settings, get_settings
from gap.data import read_records, write_card
from gap.data._export import export_records
from gap.db.engine import make_engine, make_sessionmaker, transaction
from gap.db.models import RoundHint, Turn
from gap.models.base import ChatMessage, ImageInput
from gap.quality import fit_quality, kept_by_hint, simulate
from gap.quality._report import summary_text
from gap.services.admin import QualityView, store_quality_view, view_of_fit
from gap.services.data import build_records
from gap.services.hints import HINT_PROMPT, clean_hint
from gap.services.quality import DatabaseFit, export_turns, reliability_estimator
from gap.services.rounds import start_round
from gap.storage import LocalStore

pytestmark = pytest.mark.db


def factory_of(settings: Settings) -> Any:
    return make_sessionmaker(make_engine(settings.resolved_database_url))


def test_hints_are_off_by_default(settings: Settings, make_client: Any) -> None:
    seed_images(settings)
    model = HintingModel()
    client = make_client(model, rng=random.Random(0))
    auth = login(client)
    round_id = client.post("/api/sessions", headers=auth).json()["round"]["round_id"]
    refused = client.post(f"/api/rounds/{round_id}/hint", headers=auth)
    assert refused.status_code == 404 and "hints are off" in refused.json()["detail"]
    assert model.calls == []
    page = client.get("/").text
    assert 'id="hint"' not in page and "<kbd>H</kbd>" not in page
    assert Settings().hints is False


def test_a_hint_comes_from_the_model_once_per_round_and_marks_its_turn(
    settings: Settings, make_client: Any, clock: ManualClock, tmp_path: Path
) -> None:
    seed_images(settings)
    model = HintingModel()
    client = make_client(model, rng=random.Random(0), hints=True)
    assert 'id="hint"' in client.get("/").text
    auth, other = login(client, "Ada"), login(client, "Bob")
    first = client.post("/api/sessions", headers=auth).json()["round"]["round_id"]

    hinted = client.post(f"/api/rounds/{first}/hint", headers=auth)
    assert hinted.status_code == 200, hinted.text
    assert_no_leak(hinted)
    assert hinted.json() == {"hint": "How many cups are on the table?"}  # quotes taken off
    again = client.post(f"/api/rounds/{first}/hint", headers=auth)
    assert again.json() == hinted.json()
    assert len(model.hint_calls()) == 1  # the second call was the stored hint
    # the hint request: the image and the hint prompt, no system prompt, no clause of the game
    messages, system = model.hint_calls()[0]
    assert [(m.role, m.text) for m in messages] == [("user", HINT_PROMPT)] and system is None
    # someone else's round, and a round that does not exist, are not found
    assert client.post(f"/api/rounds/{first}/hint", headers=other).status_code == 404
    assert client.post("/api/rounds/nope/hint", headers=auth).status_code == 404

    # the hint asked as it is (up to case and punctuation) is hinted; the round's other question is not
    asked = client.post(
        f"/api/rounds/{first}/questions", headers=auth, json={"question": "how many cups are on the TABLE"}
    )
    assert asked.status_code == 201, asked.text
    hinted_turn = asked.json()["turn_id"]
    assert client.post(
        f"/api/turns/{hinted_turn}/verdict", headers=auth, json={"verdict": "correct"}
    ).is_success
    edited = client.post(
        f"/api/rounds/{first}/questions", headers=auth, json={"question": "How many cups are on the chair?"}
    )
    plain_turn = edited.json()["turn_id"]
    judged = client.post(f"/api/turns/{plain_turn}/verdict", headers=auth, json={"verdict": "wrong"})
    second = judged.json()["next_round"]["round_id"]
    # a round over: 409; the next round gets its own hint
    assert client.post(f"/api/rounds/{first}/hint", headers=auth).status_code == 409
    assert client.post(f"/api/rounds/{second}/hint", headers=auth).status_code == 200
    asked = client.post(f"/api/rounds/{second}/questions", headers=auth, json={"question": "What is it?"})
    other_turn = asked.json()["turn_id"]
    assert client.post(f"/api/turns/{other_turn}/verdict", headers=auth, json={"verdict": "wrong"}).is_success
    third = client.get(
        f"/api/sessions/{client.post('/api/sessions', headers=auth).json()['session_id']}", headers=auth
    )
    clock.advance(121)  # the third round runs out: no hint for it any more
    assert (
        client.post(f"/api/rounds/{third.json()['round']['round_id']}/hint", headers=auth).status_code == 409
    )
    assert len(model.hint_calls()) == 2

    factory = factory_of(settings)
    with transaction(factory) as db:
        marks = {t.id: t.hinted for t in db.query(Turn)}
        stored = {h.round_id: (h.text, h.model) for h in db.query(RoundHint)}
    assert marks == {hinted_turn: True, plain_turn: False, other_turn: False}
    assert stored[first] == ("How many cups are on the table?", "scripted")

    # the turns export carries it, as `gap turns export` writes it
    table = export_turns(factory)
    assert dict(zip(table["turn_id"], table["hinted"], strict=True)) == {
        hinted_turn: 1,
        plain_turn: 0,
        other_turn: 0,
    }
    get_settings.cache_clear()
    env = {"GAP_DATA_DIR": str(settings.data_dir), "GAP_DATABASE_URL": settings.resolved_database_url}
    path = tmp_path / "turns.csv"
    assert CliRunner().invoke(app, ["turns", "export", str(path)], env=env).exit_code == 0
    assert pd.read_csv(path).set_index("turn_id")["hinted"].to_dict() == {
        hinted_turn: 1,
        plain_turn: 0,
        other_turn: 0,
    }

    # ...and so does the data export's provenance (here with both turns taken as kept)
    with transaction(factory) as db:
        db.get(Turn, hinted_turn).correction = "Three."  # type: ignore[union-attr]
        db.get(Turn, plain_turn).correction = "None."  # type: ignore[union-attr]
    records, missing = build_records(
        factory, {hinted_turn: 0.9, plain_turn: 0.9}, theta=0.8, images=LocalStore(settings.images_dir)
    )
    assert missing == []
    export_records(records, tmp_path / "export", fmt="llava")
    written = {r.id: r.provenance.hinted for r in read_records(tmp_path / "export" / "records.jsonl")}
    assert written == {hinted_turn: True, plain_turn: False}
    line = json.loads((tmp_path / "export" / "records.jsonl").read_text().splitlines()[0])
    assert "hinted" in line["provenance"]
    card = (write_card(tmp_path / "export")).read_text()
    assert "asked as the game's hint suggested them (`GAP_HINTS`): 1" in card


def test_hint_errors_release_the_round_and_hints_share_the_question_budget(
    settings: Settings, make_client: Any
) -> None:
    seed_images(settings)

    @dataclass
    class Silent(HintingModel):
        replies: list[str] = field(default_factory=lambda: ["  \n ", "Is the cup blue?"])

        def answer(self, image: ImageInput, messages: list[ChatMessage], system: str | None = None) -> str:
            self.calls.append((list(messages), system))
            return self.replies.pop(0)

    model = Silent()
    client = make_client(model, rng=random.Random(0), hints=True, rate_questions="3/minute")
    auth = login(client)
    round_id = client.post("/api/sessions", headers=auth).json()["round"]["round_id"]
    failed = client.post(f"/api/rounds/{round_id}/hint", headers=auth)
    assert failed.status_code == 502 and "could not answer" in failed.json()["detail"]
    retried = client.post(f"/api/rounds/{round_id}/hint", headers=auth)  # the claim was released
    assert retried.json() == {"hint": "Is the cup blue?"}
    assert client.post(f"/api/rounds/{round_id}/hint", headers=auth).status_code == 200
    limited = client.post(f"/api/rounds/{round_id}/questions", headers=auth, json={"question": "Why?"})
    assert limited.status_code == 429 and limited.headers["retry-after"]


def test_clean_hint_keeps_one_askable_line() -> None:
    assert clean_hint("Question: What colour is the car?\nIt is red.", 500) == "What colour is the car?"
    assert clean_hint("- 'Is there a dog?'", 500) == "Is there a dog?"
    assert clean_hint("How many birds are sitting on the wire?", 20) == "How many birds are"
    with pytest.raises(Exception, match="empty"):
        clean_hint('""', 500)


def test_the_report_shows_kept_rates_of_hinted_and_unhinted_questions(tmp_path: Path) -> None:
    sim = simulate(n_players=30, n_images=20, n_sessions=150, random_state=2)
    rng = np.random.default_rng(0)
    turns = sim.turns.assign(hinted=rng.integers(0, 2, len(sim.turns)).astype(np.int8))
    result = fit_quality(turns, theta=0.8)
    split = result.summary["kept_by_hint"]
    untainted = (turns["pool"] == "untainted").to_numpy()
    hinted = turns["hinted"].to_numpy() == 1
    kept = result.turns["kept"].to_numpy()
    for name, rows in (("hinted", untainted & hinted), ("unhinted", untainted & ~hinted)):
        assert split[name]["questions"] == rows.sum() > 0
        assert split[name]["kept"] == (kept & rows).sum()
        assert split[name]["rate"] == pytest.approx((kept & rows).sum() / rows.sum())
    assert result.turns["hinted"].tolist() == turns["hinted"].tolist()
    text = summary_text(result)
    assert (
        f"hinted {split['hinted']['rate']:.3f} ({split['hinted']['kept']} of {split['hinted']['questions']})"
        in text
    )
    assert kept_by_hint(sim.turns, kept) == {}  # no column, no split
    assert "hinted" not in summary_text(fit_quality(sim.turns, theta=0.8))

    # `gap quality fit` prints the split and keeps it in summary.json; `gap quality report` too
    path = tmp_path / "turns.parquet"
    turns.to_parquet(path)
    get_settings.cache_clear()
    env = {"GAP_DATA_DIR": str(tmp_path / "data")}
    fitted = CliRunner().invoke(app, ["quality", "fit", str(path), "--out", str(tmp_path / "fit")], env=env)
    assert fitted.exit_code == 0, fitted.output
    assert "kept untainted Wrongs per untainted question: hinted" in " ".join(fitted.output.split())
    summary = json.loads((tmp_path / "fit" / "summary.json").read_text())
    assert summary["kept_by_hint"]["hinted"]["questions"] == split["hinted"]["questions"]
    reported = CliRunner().invoke(app, ["quality", "report", str(tmp_path / "fit")], env=env)
    assert "unhinted" in reported.output

    # the dashboard's view of a fit carries the same counts
    estimator = reliability_estimator(Settings())
    view = view_of_fit(DatabaseFit(turns, estimator, estimator.fit_predict_proba(turns)), theta=0.8)
    assert set(view.kept_by_hint) == {"hinted", "unhinted"}
    assert view.kept_by_hint["hinted"][1] == split["hinted"]["questions"]


def test_the_dashboard_shows_the_hint_split(settings: Settings, make_client: Any) -> None:
    view = QualityView(True, "", 0.8, kept_by_hint={"hinted": [3, 12], "unhinted": [5, 100]})
    with transaction(factory_of(settings)) as db:
        store_quality_view(db, view, turns=112, now=datetime.now(UTC))
    client = make_client(HintingModel(), admin_token="tok", hints=True)
    page = client.get("/admin", headers={"Authorization": "Bearer tok"})
    assert page.status_code == 200, page.text
    assert 'id="hints"' in page.text and "25.0 %" in page.text and "5.0 %" in page.text


def test_a_hint_being_written_is_not_asked_twice_and_a_lost_one_is_taken_over(
    settings: Settings, make_client: Any, clock: ManualClock
) -> None:
    seed_images(settings)
    model = HintingModel()
    client = make_client(model, rng=random.Random(0), hints=True)
    auth = login(client)
    round_id = client.post("/api/sessions", headers=auth).json()["round"]["round_id"]
    with transaction(factory_of(settings)) as db:  # another request's claim, still in flight
        db.add(RoundHint(round_id=round_id, asked_at=clock()))
    busy = client.post(f"/api/rounds/{round_id}/hint", headers=auth)
    assert busy.status_code == 409 and "on its way" in busy.json()["detail"]
    assert model.hint_calls() == []
    clock.advance(settings.model_timeout + 11)  # its process died: the claim is taken over
    taken = client.post(f"/api/rounds/{round_id}/hint", headers=auth)
    assert taken.status_code == 200 and len(model.hint_calls()) == 1


def test_the_rounds_clock_does_not_run_while_the_model_writes_a_hint(
    settings: Settings, make_client: Any, clock: ManualClock
) -> None:
    seed_images(settings)

    @dataclass
    class Slow(HintingModel):
        """Takes 7 s of the game's clock to write a hint; the second one fails after 5 s."""

        replies: list[str] = field(default_factory=lambda: ["Is the cup blue?", "  "])

        def answer(self, image: ImageInput, messages: list[ChatMessage], system: str | None = None) -> str:
            if messages[-1].text != HINT_PROMPT:
                return super().answer(image, messages, system)
            self.calls.append((list(messages), system))
            clock.advance(7 if len(self.replies) == 2 else 5)
            return self.replies.pop(0)

    client = make_client(Slow(), rng=random.Random(0), hints=True)
    auth = login(client)
    session = client.post("/api/sessions", headers=auth).json()
    first, session_id = session["round"]["round_id"], session["session_id"]

    def seconds_left() -> float:
        return float(client.get(f"/api/sessions/{session_id}", headers=auth).json()["round"]["seconds_left"])

    before = seconds_left()
    assert client.post(f"/api/rounds/{first}/hint", headers=auth).json() == {"hint": "Is the cup blue?"}
    assert seconds_left() == pytest.approx(before, abs=0.01)  # the 7 s of writing were given back
    clock.advance(10)  # the player thinks: that is charged
    assert seconds_left() == pytest.approx(before - 10, abs=0.01)

    asked = client.post(f"/api/rounds/{first}/questions", headers=auth, json={"question": "Blue?"})
    judged = client.post(
        f"/api/turns/{asked.json()['turn_id']}/verdict", headers=auth, json={"verdict": "wrong"}
    )
    second = judged.json()["next_round"]["round_id"]
    before = seconds_left()
    assert client.post(f"/api/rounds/{second}/hint", headers=auth).status_code == 502  # an empty hint
    assert seconds_left() == pytest.approx(before, abs=0.01)  # a failed hint costs no clock either


def test_a_round_of_collection_has_its_own_model_write_its_hints(
    settings: Settings, make_client: Any, clock: ManualClock
) -> None:
    seed_images(settings)
    own = HintingModel()
    with recording_server() as server:
        client = make_client(own, rng=random.Random(0), hints=True, openai_base_url=server.base_url)
        with transaction(factory_of(settings)) as db:
            start_round(db, model="openai:model-v1", adapter=None, note=None, now=clock())
        auth = login(client)
        round_id = client.post("/api/sessions", headers=auth).json()["round"]["round_id"]
        hinted = client.post(f"/api/rounds/{round_id}/hint", headers=auth)
        assert hinted.status_code == 200, hinted.text
    assert own.hint_calls() == []  # not the replica's own GAP_MODEL
    [body] = [b for b in server.bodies if HINT_PROMPT in json.dumps(b)]  # after the load's readiness ping
    assert body["model"] == "model-v1"
    with transaction(factory_of(settings)) as db:
        assert db.get(RoundHint, round_id).model == "openai:model-v1"  # type: ignore[union-attr]
