"""`gap db upgrade`, `gap images add` and `gap images list` in-process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from fixtures.game import png_bytes
from gap.cli import app
from gap.config import get_settings
from gap.db.engine import make_engine, make_sessionmaker, transaction
from gap.db.models import Image

pytestmark = pytest.mark.db


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> Iterator[dict[str, str]]:
    get_settings.cache_clear()
    yield {"GAP_DATA_DIR": str(tmp_path / "data"), "GAP_DATABASE_URL": database_url}
    get_settings.cache_clear()


def image_count(database_url: str) -> int:
    engine = make_engine(database_url)
    with transaction(make_sessionmaker(engine)) as db:
        count = db.scalar(select(func.count()).select_from(Image)) or 0
    engine.dispose()
    return count


def test_db_upgrade_is_idempotent(env: dict[str, str]) -> None:
    runner = CliRunner()
    for _ in range(2):
        result = runner.invoke(app, ["db", "upgrade"], env=env)
        assert result.exit_code == 0, result.output


def test_images_add_skips_bad_files_and_keeps_good_ones(env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.png").write_bytes(png_bytes(1))
    (folder / "sub" / "b.png").write_bytes(png_bytes(2))
    (folder / "notes.txt").write_text("not an image")
    (folder / "truncated.png").write_bytes(png_bytes(3)[:40])
    (folder / ".hidden.png").write_bytes(png_bytes(4))
    runner = CliRunner()
    result = runner.invoke(app, ["images", "add", str(folder), "--pool", "tainted"], env=env)
    assert result.exit_code == 0, result.output
    assert "added 2 image(s) to the tainted pool, skipped 2" in result.output
    assert "notes.txt" in result.output and "truncated.png" in result.output
    assert image_count(env["GAP_DATABASE_URL"]) == 2
    stored = sorted(p.name for p in (tmp_path / "data" / "images").rglob("*") if p.is_file())
    assert len(stored) == 2 and not any(name.startswith(".incoming") for name in stored)

    again = runner.invoke(app, ["images", "add", str(folder / "a.png"), "--pool", "untainted"], env=env)
    assert again.exit_code == 1 and "already added" in again.output
    assert image_count(env["GAP_DATABASE_URL"]) == 2

    listed = runner.invoke(app, ["images", "list"], env=env)
    assert listed.exit_code == 0 and "2 image(s)" in listed.output and "a.png" in listed.output


def test_images_add_rejects_an_unknown_pool(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png_bytes(1))
    result = CliRunner().invoke(app, ["images", "add", str(tmp_path / "a.png"), "--pool", "easy"], env=env)
    assert result.exit_code == 1 and "pool must be 'tainted' or 'untainted'" in result.output
    assert image_count(env["GAP_DATABASE_URL"]) == 0


def test_missing_path_is_reported(env: dict[str, str], tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["images", "add", str(tmp_path / "nope.png"), "--pool", "tainted"], env=env
    )
    assert result.exit_code == 1 and "no such file" in result.output
