"""The operators' dashboard: closed without the admin token, complete with it, and its actions."""

from __future__ import annotations

import io
import json
import os
import random
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient
from PIL import Image as PILImage
from sqlalchemy import select

from fixtures.game import ManualClock, careful_player_history, login, png_bytes, seed_images
from gap.config import Settings
from gap.db.engine import make_engine, make_sessionmaker, transaction
from gap.db.models import Image, Round, Turn
from gap.models.base import ChatMessage, ImageInput
from gap.services.telegram import init_data_hash
from gap.web.app import create_app

pytestmark = pytest.mark.db

TOKEN = "s3cret-admin-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
CHANGE = {"X-GAP-Admin": "1"}
ROOT = Path(__file__).resolve().parents[2]


class CannedModel:
    """Answers instantly: the dashboard tests are about counting, not about the model."""

    name = "canned"

    def answer(self, image: ImageInput, messages: list[ChatMessage], system: str | None = None) -> str:
        return "Two red apples on a plate."


def play(client: TestClient, name: str, verdicts: list[str]) -> None:
    """One whole session: one question per picture, judged with the next verdict from ``verdicts``."""
    auth = login(client, name)
    session = client.post("/api/sessions", headers=auth).json()
    for i in range(100):
        state = client.get(f"/api/sessions/{session['session_id']}", headers=auth).json()
        if state["status"] == "finished":
            return
        rnd = state["round"]
        asked = client.post(
            f"/api/rounds/{rnd['round_id']}/questions",
            headers=auth,
            json={"question": f"How many apples? ({i})"},
        )
        assert asked.status_code == 201, asked.text
        verdict = verdicts[i % len(verdicts)]
        body = {"verdict": verdict, "correction": "Three." if verdict == "wrong" and i % 2 else None}
        judged = client.post(f"/api/turns/{asked.json()['turn_id']}/verdict", headers=auth, json=body)
        assert judged.status_code == 200, judged.text
        if verdict == "correct":  # Correct keeps the round open: end it with a Wrong
            again = client.post(
                f"/api/rounds/{rnd['round_id']}/questions", headers=auth, json={"question": "And now?"}
            )
            client.post(
                f"/api/turns/{again.json()['turn_id']}/verdict", headers=auth, json={"verdict": "wrong"}
            )
    raise AssertionError("the session did not finish")


@pytest.fixture
def admin_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "admin_token": TOKEN,
            "session_images": 4,
            "telegram_bot_token": "123456:TEST-bot-token",
            "telegram_admin_ids": [777],
        }
    )


@pytest.fixture
def client(admin_settings: Settings) -> Any:
    seed_images(admin_settings, per_pool=3)
    app = create_app(admin_settings, model=CannedModel(), clock=ManualClock(), rng=random.Random(5))
    with TestClient(app) as client:
        yield client


@pytest.fixture
def played(client: TestClient) -> TestClient:
    play(client, "Ada", ["wrong", "correct"])
    play(client, "Bob", ["correct", "wrong", "wrong"])
    return client


def judged_turns(settings: Settings) -> list[tuple[str, bool, str]]:
    engine = make_engine(settings.resolved_database_url)
    with transaction(make_sessionmaker(engine)) as db:
        rows = db.execute(
            select(Round.pool, Turn.instructed, Turn.verdict)
            .join(Round, Round.id == Turn.round_id)
            .where(Turn.verdict.is_not(None))
        ).all()
    engine.dispose()
    return [(pool, bool(instructed), str(verdict)) for pool, instructed, verdict in rows]


# --- closed to everyone else -------------------------------------------------------------------


PROTECTED = [
    ("GET", "/admin/api/overview"),
    ("GET", "/admin/api/turns"),
    ("GET", "/admin/api/images"),
    ("GET", "/admin/plots/turns-per-day.png"),
    ("GET", "/admin/images/abc"),
    ("PATCH", "/admin/api/images/abc"),
    ("POST", "/admin/api/export"),
    ("GET", "/admin/exports/llava-20260101T000000Z.zip"),
]


def test_without_the_admin_token_everything_is_refused(played: TestClient) -> None:
    page = played.get("/admin")
    assert page.status_code == 401
    assert 'id="login-form"' in page.text and "Ada" not in page.text
    for method, path in PROTECTED:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {TOKEN}x"}):
            response = played.request(method, path, headers=headers, json={})
            assert response.status_code == 401, (method, path, headers, response.status_code)
    # a guest's bearer token is not an admin token
    assert played.get("/admin/api/overview", headers=login(played, "Eve")).status_code == 401
    assert played.post("/admin/login", json={"token": "guess"}).status_code == 401


@pytest.mark.parametrize(
    "half_configured",
    [{}, {"telegram_admin_ids": [777]}, {"telegram_bot_token": "123456:TEST-bot-token"}],
    ids=["nothing", "admin-ids-without-bot", "bot-without-admin-ids"],
)
def test_admin_is_off_without_a_token_or_admin_ids(
    settings: Settings, half_configured: dict[str, Any]
) -> None:
    with TestClient(create_app(settings.model_copy(update=half_configured), model=CannedModel())) as client:
        page = client.get("/admin")
        # the same tidy page as the sign-in, saying how to turn it on, not bare JSON
        assert page.status_code == 404
        assert page.headers["content-type"].startswith("text/html")
        assert 'id="admin-disabled"' in page.text and 'id="login-form"' not in page.text
        for setting in ("GAP_ADMIN_TOKEN", "GAP_TELEGRAM_ADMIN_IDS", "GAP_TELEGRAM_BOT_TOKEN"):
            assert setting in page.text
        assert "/static/admin.css" in page.text
        assert client.get("/admin/api/overview", headers=BEARER).status_code == 404
        assert client.post("/admin/login", json={"token": TOKEN}).status_code == 404


def test_the_play_page_and_api_schema_do_not_point_at_admin(client: TestClient) -> None:
    assert "/admin" not in client.get("/").text
    assert "/admin" not in json.dumps(client.get("/openapi.json").json())


# --- the dashboard ----------------------------------------------------------------------------


def test_dashboard_renders_with_data(played: TestClient, admin_settings: Settings) -> None:
    turns = judged_turns(admin_settings)
    untainted = [v for pool, _, v in turns if pool == "untainted"]
    instructed = [v for pool, i, v in turns if pool == "tainted" and i]

    page = played.get("/admin", headers=BEARER)
    assert page.status_code == 200
    assert 'id="kpi-players">2<' in page.text
    overview = played.get("/admin/api/overview", headers=BEARER).json()
    assert overview["players"] == 2
    assert overview["sessions_finished"] == 2
    assert overview["judged"] == len(turns)
    assert overview["untainted_judged"] == len(untainted)
    assert overview["untainted_error_rate"] == pytest.approx(untainted.count("wrong") / len(untainted))
    if instructed:
        assert overview["catch_rate"] == pytest.approx(instructed.count("wrong") / len(instructed))
    assert "How many apples?" in page.text and "Ada" in page.text  # the live view
    for plot in ("turns-per-day", "reliability"):
        png = played.get(f"/admin/plots/{plot}.png", headers=BEARER)
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    live = played.get("/admin/api/turns?limit=3", headers=BEARER).json()
    assert len(live) == 3 and {"player", "question", "answer", "verdict"} <= set(live[0])
    assert not {"pool", "instructed"} & set(live[0])


def test_dashboard_thumbnails_come_from_an_admin_only_route(played: TestClient) -> None:
    page = played.get("/admin", headers=BEARER).text
    image_id = played.get("/admin/api/images", headers=BEARER).json()[0]["image_id"]
    assert f'src="/admin/images/{image_id}"' in page and 'src="/api/images/' not in page
    thumb = played.get(f"/admin/images/{image_id}", headers=BEARER)
    assert thumb.status_code == 200 and thumb.content.startswith(b"\x89PNG")
    assert played.get(f"/admin/images/{image_id}").status_code == 401
    assert played.get("/admin/images/nope", headers=BEARER).status_code == 404


def test_cookie_login_needs_the_change_header_for_changes(played: TestClient) -> None:
    assert played.post("/admin/login", json={"token": TOKEN}).status_code == 204
    assert played.get("/admin").status_code == 200
    image_id = played.get("/admin/api/images").json()[0]["image_id"]
    assert played.patch(f"/admin/api/images/{image_id}", json={"enabled": False}).status_code == 401
    assert (
        played.patch(f"/admin/api/images/{image_id}", json={"enabled": False}, headers=CHANGE).status_code
        == 200
    )
    genuine = played.cookies["gap_admin"]
    played.cookies.clear()
    assert played.get("/admin", headers={"Cookie": f"gap_admin={genuine}"}).status_code == 200
    expires, who, signature = genuine.split(".")
    for forged in (f"{int(expires) + 9999}.{who}.{signature}", f"{expires}.tg:777.{signature}", "1.token.00"):
        assert played.get("/admin", headers={"Cookie": f"gap_admin={forged}"}).status_code == 401
    assert played.post("/admin/logout").status_code == 204


def init_data(user_id: int, bot_token: str) -> str:
    """Signed initData (the signing recipe itself is checked independently in test_telegram)."""
    fields = {
        "auth_date": str(int(ManualClock().now.timestamp())),
        "user": json.dumps({"id": user_id, "first_name": "Op"}),
    }
    return urlencode({**fields, "hash": init_data_hash(fields, bot_token)})


def test_telegram_admins_sign_in_with_init_data(client: TestClient, admin_settings: Settings) -> None:
    bot_token = admin_settings.telegram_bot_token or ""
    assert client.post("/admin/login", json={"init_data": init_data(4242, bot_token)}).status_code == 401
    assert client.post("/admin/login", json={"init_data": init_data(777, "999:OTHER")}).status_code == 401
    admin = init_data(777, bot_token)
    assert client.post("/admin/login", json={"init_data": admin}).status_code == 204
    page = client.get("/admin")
    assert page.status_code == 200 and "Telegram admin 777" in page.text


def test_image_pool_management(client: TestClient, admin_settings: Settings) -> None:
    broken = png_bytes(99)[:-40]
    files = [
        ("files", ("new.png", png_bytes(100), "image/png")),
        ("files", ("broken.png", broken, "image/png")),
        ("files", ("notes.txt", b"hello", "text/plain")),
        ("files", ("again.png", png_bytes(100), "image/png")),
    ]
    response = client.post("/admin/api/images", headers=BEARER, data={"pool": "untainted"}, files=files)
    assert response.status_code == 200
    results = {r["file"]: r for r in response.json()["results"]}
    assert results["new.png"]["status"] == "added"
    assert [results[f]["status"] for f in ("broken.png", "notes.txt", "again.png")] == ["refused"] * 3
    assert "already added" in results["again.png"]["reason"]
    bad_pool = client.post("/admin/api/images", headers=BEARER, data={"pool": "easy"}, files=files[:1])
    assert bad_pool.status_code == 422

    new_id = results["new.png"]["image_id"]
    moved = client.patch(f"/admin/api/images/{new_id}", headers=BEARER, json={"pool": "tainted"})
    assert moved.json() == {"image_id": new_id, "pool": "tainted", "enabled": True}
    off = client.patch(f"/admin/api/images/{new_id}", headers=BEARER, json={"enabled": False})
    assert off.json()["enabled"] is False
    assert client.patch("/admin/api/images/nope", headers=BEARER, json={"enabled": False}).status_code == 404
    engine = make_engine(admin_settings.resolved_database_url)
    with transaction(make_sessionmaker(engine)) as db:
        image = db.get(Image, new_id)
        assert image is not None and (image.pool, image.enabled) == ("tainted", False)
    engine.dispose()


def test_export_button_writes_a_downloadable_set(client: TestClient, admin_settings: Settings) -> None:
    pytest.importorskip(
        "gap.services.quality", reason="the turns table for the quality model is not there yet"
    )
    nothing = client.post("/admin/api/export", headers=BEARER, json={"format": "llava"})
    assert nothing.status_code == 422 and "no records" in nothing.json()["detail"]
    careful_player_history(admin_settings)
    response = client.post("/admin/api/export", headers=BEARER, json={"format": "llava"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["records"] > 0 and body["missing_references"] == 0
    archive = client.get(body["download"], headers=BEARER)
    assert archive.status_code == 200 and archive.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(archive.content)).namelist()
    assert {"export.json", "train.json", "records.jsonl"} <= set(names)
    assert client.get("/admin/exports/..%2F..%2Fetc.zip", headers=BEARER).status_code == 404
    assert client.post("/admin/api/export", headers=BEARER, json={"format": "csv"}).status_code == 422


# --- in a browser -----------------------------------------------------------------------------


@pytest.mark.browser
def test_dashboard_in_the_browser(
    admin_settings: Settings, live_server: Any, browser: Any, tmp_path: Path
) -> None:
    seed_images(admin_settings, per_pool=3)
    app = create_app(admin_settings, model=CannedModel(), clock=ManualClock(), rng=random.Random(5))
    with TestClient(app) as api:
        play(api, "Ada", ["wrong", "correct"])
        play(api, "Bob", ["correct", "wrong", "wrong"])
    server = live_server(app)
    context = browser.new_context(viewport={"width": 1200, "height": 1400})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.clock.install()
    page.goto(server.url + "/admin")
    page.fill("#token", "wrong")
    page.click("#login-form button")
    page.wait_for_selector("#login-error:not([hidden])")
    page.fill("#token", TOKEN)
    page.click("#login-form button")
    page.wait_for_selector("#kpi-players")
    assert page.text_content("#kpi-players") == "2"
    sizes = page.evaluate(
        "Promise.all([...document.querySelectorAll('.plots img')]"
        ".map((i) => i.decode().then(() => i.naturalWidth)))"
    )
    assert len(sizes) >= 2 and all(sizes)
    # switch an image off from the table
    row = page.locator("#images tbody tr").first
    row.locator("button[data-action=toggle]").click()
    page.wait_for_selector("#images tbody tr.off")
    # the live view refreshes by itself
    page.clock.run_for(5_500)
    page.wait_for_function("document.getElementById('live-status').textContent.startsWith('updated')")
    shots = ROOT / "docs" / "screenshots" if os.environ.get("GAP_UPDATE_SCREENSHOTS") == "1" else tmp_path
    shot = PILImage.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    shot.quantize(colors=128, method=PILImage.Quantize.MEDIANCUT).save(shots / "admin.png", optimize=True)
    assert errors == []
    context.close()
