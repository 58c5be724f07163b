"""`gap images list` in a real 80-column run: ids are printed whole, in the table and in `--json`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from fixtures.game import png_bytes
from gap.db.engine import make_engine, make_sessionmaker, transaction
from gap.db.models import Image
from gap.services.game import utcnow
from gap.services.images import add_image, parse_pool
from gap.storage import LocalStore

pytestmark = pytest.mark.db

LONG_NAME = "a-photo-whose-file-name-is-much-longer-than-any-eighty-column-table-could-hold.png"


def gap(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The installed command in a child process, as a user runs it (its own terminal width)."""
    command = [sys.executable, "-c", "from gap.cli import main; main()", *args]
    return subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, timeout=120)


def test_ids_are_never_cut_at_80_columns(tmp_path: Path, database_url: str) -> None:
    engine = make_engine(database_url)
    with transaction(make_sessionmaker(engine)) as db:
        for seed, name in enumerate([LONG_NAME, "b.png", "c.png"]):
            add_image(
                db,
                images=LocalStore(tmp_path / "images"),
                data=png_bytes(seed),
                original_name=name,
                pool=parse_pool("tainted" if seed % 2 else "untainted"),
                now=utcnow(),
            )
        ids = set(db.scalars(select(Image.id)))
    engine.dispose()
    env = {"GAP_DATA_DIR": str(tmp_path), "GAP_DATABASE_URL": database_url, "COLUMNS": "80"}

    table = gap("images", "list", env=env)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in table.stdout
    for image_id in ids:
        assert any(image_id in line.split() for line in lines), (image_id, table.stdout)
    assert "3 image(s)" in table.stdout

    listed = gap("images", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert {row["id"] for row in rows} == ids
    assert LONG_NAME in {row["name"] for row in rows}
