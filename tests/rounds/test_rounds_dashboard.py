"""The dashboard's rounds: open one through /admin/api/rounds, see each round's model-fooled rate."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from fixtures.game import ManualClock, seed_images
from gap.config import Settings
from gap.db.engine import make_engine, make_sessionmaker, transaction
from gap.services.admin import QualityView, store_quality_view
from gap.web.app import create_app

pytestmark = pytest.mark.db

TOKEN = "rounds-admin-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


class NoModel:
    name = "none"

    def answer(self, *args: object, **kwargs: object) -> str:
        raise AssertionError("nothing is asked here")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    current = settings.model_copy(update={"admin_token": TOKEN})
    seed_images(current, per_pool=2)
    app = create_app(current, model=NoModel(), clock=ManualClock(), rng=random.Random(0))
    with TestClient(app) as client:
        yield client


def test_rounds_open_and_show_on_the_dashboard(client: TestClient, settings: Settings) -> None:
    assert client.post("/admin/api/rounds", json={"model": "openai:v0"}).status_code == 401
    assert "Rounds of collection" not in client.get("/admin", headers=BEARER).text  # none yet
    opened = client.post("/admin/api/rounds", headers=BEARER, json={"model": "openai:v0", "note": "base"})
    assert opened.status_code == 201 and opened.json() == {"number": 1, "model": "openai:v0", "adapter": None}
    second = client.post("/admin/api/rounds", headers=BEARER, json={"model": "openai:v1"})
    assert second.json()["number"] == 2
    bad = client.post("/admin/api/rounds", headers=BEARER, json={"model": " "})
    assert bad.status_code == 422 and "needs a model spec" in bad.text
    listed = client.get("/admin/api/rounds", headers=BEARER).json()
    assert [(r["number"], r["model"], r["note"]) for r in listed] == [
        (1, "openai:v0", "base"),
        (2, "openai:v1", None),
    ]

    engine = make_engine(settings.resolved_database_url)
    with transaction(make_sessionmaker(engine)) as db:
        fooled = {"1": [67.0, 1000.0, 0.067, 0.053, 0.084]}
        store_quality_view(db, QualityView(True, fooled_by_round=fooled), turns=1000, now=datetime.now(UTC))
    engine.dispose()
    page = client.get("/admin", headers=BEARER).text
    table = page[page.index('id="rounds"') :]
    table = table[: table.index("</table>")]
    assert "openai:v0" in table and "openai:v1" in table and "2 (current)" in table
    assert "6.7 % [5.3 %, 8.4 %] (67/1000)" in table
