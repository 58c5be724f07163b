"""The dashboard and rounds of collection: a form opens a round (in a real browser), and `?round=N`
narrows every figure to that round's turns."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from fixtures.game import ManualClock, login, seed_images
from gap.config import Settings
from gap.db.engine import make_engine, make_sessionmaker, transaction
from gap.db.models import Turn
from gap.models.base import ChatMessage, ImageInput
from gap.services.admin import quality_view, store_quality_view
from gap.web.app import create_app

pytestmark = pytest.mark.db

TOKEN = "rounds-form-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


class CannedModel:
    name = "canned"

    def answer(self, image: ImageInput, messages: list[ChatMessage], system: str | None = None) -> str:
        return "Two red apples on a plate."


def turns_in(settings: Settings, number: int | None) -> int:
    engine = make_engine(settings.resolved_database_url)
    with transaction(make_sessionmaker(engine)) as db:
        query = select(func.count()).select_from(Turn)
        if number is not None:
            query = query.where(Turn.collection_round == number)
        count = int(db.scalar(query) or 0)
    engine.dispose()
    return count


def play(client: TestClient, name: str, questions: int) -> None:
    """``questions`` questions of one session, each judged Wrong (every round ends on its Wrong)."""
    auth = login(client, name)
    session = client.post("/api/sessions", headers=auth).json()
    for i in range(questions):
        state = client.get(f"/api/sessions/{session['session_id']}", headers=auth).json()
        asked = client.post(
            f"/api/rounds/{state['round']['round_id']}/questions", headers=auth, json={"question": f"Q{i}?"}
        )
        assert asked.status_code == 201, asked.text
        judged = client.post(
            f"/api/turns/{asked.json()['turn_id']}/verdict", headers=auth, json={"verdict": "wrong"}
        )
        assert judged.status_code == 200, judged.text


@pytest.fixture
def admin_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"admin_token": TOKEN, "session_images": 4})


@pytest.fixture
def client(admin_settings: Settings) -> Iterator[TestClient]:
    seed_images(admin_settings, per_pool=3)
    app = create_app(admin_settings, model=CannedModel(), clock=ManualClock(), rng=random.Random(3))
    with TestClient(app) as client:
        yield client


def test_a_filtered_dashboard_counts_only_that_rounds_turns(
    client: TestClient, admin_settings: Settings
) -> None:
    # both rounds name the replica's own model spec, so the canned model answers both
    spec = admin_settings.model
    assert (
        client.post("/admin/api/rounds", headers=BEARER, json={"model": spec, "note": "v0"}).status_code
        == 201
    )
    play(client, "Ada", 2)
    play(client, "Cy", 1)
    assert (
        client.post("/admin/api/rounds", headers=BEARER, json={"model": spec, "note": "v1"}).status_code
        == 201
    )
    play(client, "Bob", 4)
    first, second, every = (
        turns_in(admin_settings, 1),
        turns_in(admin_settings, 2),
        turns_in(admin_settings, None),
    )
    assert (first, second, every) == (3, 4, 7)

    engine = make_engine(admin_settings.resolved_database_url)
    factory = make_sessionmaker(engine)
    view = quality_view(factory, admin_settings)
    with transaction(factory) as db:
        store_quality_view(db, view, turns=every, now=datetime.now(UTC))
    engine.dispose()

    def overview(query: str) -> dict[str, Any]:
        response = client.get(f"/admin/api/overview{query}", headers=BEARER)
        assert response.status_code == 200, response.text
        return dict(response.json())

    whole, one, two = overview(""), overview("?round=1"), overview("?round=2")
    assert (whole["round"], one["round"], two["round"]) == (None, 1, 2)
    assert (whole["turns"], one["turns"], two["turns"]) == (every, first, second)
    assert (one["judged"], two["judged"]) == (first, second)
    assert (whole["players"], one["players"], two["players"]) == (3, 2, 1)
    assert (one["sessions"], two["sessions"]) == (2, 1)
    assert one["untainted_judged"] + one["instructed_judged"] + one["clean_judged"] == first
    # the quality view of a round: its own Wrong-marked untainted answers, out of the fit over all
    candidates = [overview(q)["quality"]["candidates"] for q in ("", "?round=1", "?round=2")]
    assert candidates[0] == candidates[1] + candidates[2] == view.candidates
    assert candidates[1] == one["untainted_wrong"] and candidates[2] == two["untainted_wrong"]

    players = {t["player"] for t in client.get("/admin/api/turns?round=2&limit=50", headers=BEARER).json()}
    assert players == {"Bob"}
    assert len(client.get("/admin/api/turns?round=1&limit=50", headers=BEARER).json()) == first
    images = client.get("/admin/api/images?round=1", headers=BEARER).json()
    assert sum(s["judged"] for s in images) == first

    page = client.get("/admin?round=2", headers=BEARER)
    assert page.status_code == 200
    assert f'id="kpi-turns">{second}<' in page.text and 'id="round-scope"' in page.text
    assert '<option value="2" selected>' in page.text
    assert 'src="/admin/plots/turns-per-day.png?round=2"' in page.text
    assert f'id="kpi-turns">{every}<' in client.get("/admin", headers=BEARER).text
    assert client.get("/admin/plots/turns-per-day.png?round=1", headers=BEARER).status_code == 200

    missing = client.get("/admin/api/overview?round=9", headers=BEARER)
    assert missing.status_code == 404 and "no round 9" in missing.text
    assert client.get("/admin?round=9", headers=BEARER).status_code == 404
    assert client.get("/admin?round=9").status_code == 401  # nobody else learns which rounds exist
    assert client.get("/admin/api/overview?round=x", headers=BEARER).status_code == 422
    for beyond in (-1, 2**31, -307063359839062):  # past the database's integers: a 500 on PostgreSQL
        for path in ("/admin/api/overview", "/admin/api/turns", "/admin/api/images", "/admin"):
            assert client.get(f"{path}?round={beyond}", headers=BEARER).status_code == 422


@pytest.mark.browser
def test_the_dashboard_form_opens_a_round(admin_settings: Settings, live_server: Any, browser: Any) -> None:
    seed_images(admin_settings, per_pool=1)
    server = live_server(create_app(admin_settings, model=CannedModel(), rng=random.Random(0)))
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(server.url + "/admin")
        page.fill("#token", TOKEN)
        page.click("#login-form button")
        page.wait_for_selector("#round-form")
        assert page.locator("#rounds").count() == 0  # no round yet

        page.fill("#round-model", "llama:7b")  # refused by the server, shown beside the form
        page.click("#round-form button")
        page.wait_for_selector("#round-error:not([hidden])")
        assert "unknown model spec 'llama:7b'" in page.text_content("#round-error")

        page.fill("#round-model", "openai:gap-v1")
        page.fill("#round-note", "after fine-tuning")
        page.click("#round-form button")
        page.wait_for_selector("#rounds")
        row = page.text_content("#rounds tbody tr")
        assert row is not None and "1 (current)" in row and "openai:gap-v1" in row
        assert page.locator("#round-select option").all_text_contents() == [
            "all rounds",
            "round 1: openai:gap-v1",
        ]
        page.select_option("#round-select", "1")
        page.wait_for_url("**/admin?round=1")
        page.wait_for_selector("#round-scope")
        assert errors == []
    finally:
        context.close()
