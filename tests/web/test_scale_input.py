"""Bad input gets a clear 4xx, never a 500: NUL and lone surrogates, oversized bodies, image bombs.

Each of these answered 500 (or a traceback) before: a NUL character anywhere on PostgreSQL, a lone
surrogate on both databases, a 20000x20000 PNG of 50 KB through the CLI and the dashboard upload.
"""

from __future__ import annotations

import functools
import io
import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image as PILImage
from sqlalchemy import func, select
from typer.testing import CliRunner

from fixtures.game import png_bytes, seed_images
from gap.cli import app as cli_app
from gap.config import Settings, get_settings
from gap.data._images import image_suffix
from gap.db.engine import make_engine, make_sessionmaker, transaction
from gap.db.models import Image, Player, Turn
from gap.errors import ImageError
from gap.game import Pool
from gap.models.base import ChatMessage, ImageInput
from gap.services.images import add_image
from gap.storage import LocalStore
from gap.web.app import create_app

pytestmark = pytest.mark.db

TOKEN = "s3cret-admin-token"
BAD_TEXT = {"nul": "a\u0000b", "surrogate": "a\ud800b"}


class Yes:
    name = "yes"

    def answer(self, image: ImageInput, messages: list[ChatMessage], system: str | None = None) -> str:
        return "yes"


def post_json(client: TestClient, path: str, body: Any, **headers: str) -> Any:
    """POST ``body`` as ASCII JSON: escapes let a lone surrogate travel, as any client may send it."""
    return client.post(
        path, content=json.dumps(body), headers={"content-type": "application/json", **headers}
    )


def count(settings: Settings, model: type) -> int:
    engine = make_engine(settings.resolved_database_url)
    with transaction(make_sessionmaker(engine)) as db:
        n = db.scalar(select(func.count()).select_from(model)) or 0
    engine.dispose()
    return n


@functools.cache
def bomb_png() -> bytes:
    """20000x20000 pixels in about 50 KB: decoded, it would take 400 MB."""
    buffer = io.BytesIO()
    PILImage.new("1", (20000, 20000)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


@pytest.fixture
def client(settings: Settings) -> Any:
    seed_images(settings, per_pool=2)
    app = create_app(
        settings.model_copy(
            update={"admin_token": TOKEN, "max_body_bytes": 4096, "max_upload_bytes": 100_000}
        ),
        model=Yes(),
        rng=random.Random(3),
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def play_one(client: TestClient) -> tuple[dict[str, str], str, str]:
    token = post_json(client, "/api/auth/guest", {"name": "Ada"}).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    round_id = client.post("/api/sessions", headers=auth).json()["round"]["round_id"]
    asked = post_json(client, f"/api/rounds/{round_id}/questions", {"question": "What is it?"}, **auth)
    assert asked.status_code == 201, asked.text
    return auth, round_id, asked.json()["turn_id"]


@pytest.mark.parametrize("kind", sorted(BAD_TEXT))
def test_bad_text_in_name_question_and_correction_is_a_422(
    client: TestClient, settings: Settings, kind: str
) -> None:
    bad = BAD_TEXT[kind]
    refused = post_json(client, "/api/auth/guest", {"name": bad})
    assert refused.status_code == 422
    assert ("NUL" if kind == "nul" else "surrogate") in refused.json()["detail"]
    assert count(settings, Player) == 0
    auth, round_id, turn_id = play_one(client)
    judged = post_json(
        client, f"/api/turns/{turn_id}/verdict", {"verdict": "wrong", "correction": bad}, **auth
    )
    assert judged.status_code == 422
    # the turn is still waiting for its verdict: a clean one goes through
    ok = post_json(client, f"/api/turns/{turn_id}/verdict", {"verdict": "correct"}, **auth)
    assert ok.status_code == 200, ok.text
    asked = post_json(client, f"/api/rounds/{round_id}/questions", {"question": f"is it {bad}?"}, **auth)
    assert asked.status_code == 422
    assert count(settings, Turn) == 1


def test_good_text_that_looks_alike_passes(client: TestClient, settings: Settings) -> None:
    # a surrogate pair (an emoji, as JSON escapes) and an escaped backslash before u0000 are fine
    for name in ("Ada \U0001f600", "back\\u0000slash"):
        response = post_json(client, "/api/auth/guest", {"name": name})
        assert response.status_code == 200, response.text
    assert count(settings, Player) == 2


def test_nul_in_the_url_is_a_422(client: TestClient) -> None:
    auth, _round_id, _turn_id = play_one(client)
    for url in ("/api/sessions/a%00b", "/api/leaderboard?period=a%00"):
        response = client.get(url, headers=auth)
        assert response.status_code == 422 and "NUL" in response.json()["detail"]


def test_bodies_over_the_limit_are_a_413(client: TestClient) -> None:
    big = post_json(client, "/api/auth/guest", {"name": "x" * 5000})
    assert big.status_code == 413 and "larger than 4096 bytes" in big.json()["detail"]

    def chunks() -> Any:  # no Content-Length: counted while read
        yield b'{"name": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    streamed = client.post("/api/auth/guest", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    upload = client.post(
        "/admin/api/images",
        headers={"Authorization": f"Bearer {TOKEN}"},
        data={"pool": "tainted"},
        files=[("files", ("big.png", b"x" * 110_000, "image/png"))],
    )
    assert upload.status_code == 413


def test_dashboard_upload_refuses_a_bomb_and_adds_the_next_file(
    client: TestClient, settings: Settings
) -> None:
    before = count(settings, Image)
    bomb = bomb_png()
    assert len(bomb) < 90_000  # it fits under the upload limit: the pixel check refuses it
    response = client.post(
        "/admin/api/images",
        headers={"Authorization": f"Bearer {TOKEN}"},
        data={"pool": "tainted"},
        files=[
            ("files", ("bomb.png", bomb, "image/png")),
            ("files", ("good.png", png_bytes(77), "image/png")),
        ],
    )
    assert response.status_code == 200, response.text
    results = {r["file"]: r for r in response.json()["results"]}
    assert results["bomb.png"]["status"] == "refused"
    assert "too large (more than 50,000,000 pixels)" in results["bomb.png"]["reason"]
    assert results["good.png"]["status"] == "added"
    assert count(settings, Image) == before + 1


def test_cli_images_add_refuses_a_bomb_and_adds_the_next_file(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a-bomb.png").write_bytes(bomb_png())
    (tmp_path / "b-good.png").write_bytes(png_bytes(78))
    monkeypatch.setenv("GAP_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("GAP_DATABASE_URL", settings.resolved_database_url)
    get_settings.cache_clear()
    result = CliRunner().invoke(cli_app, ["images", "add", str(tmp_path), "--pool", "tainted"])
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "too large" in result.output and "added 1 image(s)" in result.output
    assert count(settings, Image) == 1


def test_imports_refuse_a_bomb_with_a_reason() -> None:
    with pytest.raises(ImageError, match="too large"):
        image_suffix(bomb_png())
    assert image_suffix(png_bytes(1)) == ".png"


def test_file_names_with_bad_text_are_cleaned(settings: Settings) -> None:
    # Linux file names that are not UTF-8 decode with surrogateescape: lone surrogates
    engine = make_engine(settings.resolved_database_url)
    with transaction(make_sessionmaker(engine)) as db:
        add_image(
            db,
            images=LocalStore(settings.images_dir),
            data=png_bytes(79),
            original_name="odd\u0000name-\udce9.png",
            pool=Pool.TAINTED,
            now=datetime.now(UTC),
        )
    with transaction(make_sessionmaker(engine)) as db:
        assert list(db.scalars(select(Image.original_name))) == ["oddname-\ufffd.png"]
    engine.dispose()
