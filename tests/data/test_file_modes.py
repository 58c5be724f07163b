"""What GAP writes (stored images, exports, cards, quality tables) gets the modes the umask allows."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy.orm import Session, sessionmaker

from fixtures.game import png_bytes
from gap.data import Record, export_records, save_records, write_card
from gap.db.engine import transaction
from gap.quality import write_table
from gap.services.game import utcnow
from gap.services.images import add_image, parse_pool
from gap.storage import LocalStore

pytestmark = pytest.mark.db


@pytest.fixture(params=[0o022, 0o077], ids=["umask-022", "umask-077"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    mask: int = request.param
    previous = os.umask(mask)
    yield mask
    os.umask(previous)


def modes(root: Path) -> dict[str, int]:
    """Permission bits of every file and folder below ``root`` (``root`` included), by relative path."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.stat().st_mode)
    return found


def assert_umask_modes(root: Path, mask: int) -> None:
    found = modes(root)
    assert len(found) > 1
    for name, mode in found.items():
        expected = (0o777 if (root / name).is_dir() else 0o666) & ~mask
        assert mode == expected, f"{name}: {oct(mode)}, expected {oct(expected)}"


def test_exports_follow_the_umask(umask: int, tmp_path: Path, records: list[Record]) -> None:
    records_dir = save_records(records, tmp_path / "records", manifest={"source": "test"})
    assert_umask_modes(records_dir, umask)
    out = tmp_path / "llava"
    export_records(records, out, fmt="llava")
    write_card(out)
    assert (out / "README.md").is_file() and any((out / "images").iterdir())
    assert_umask_modes(out, umask)
    export_records(records, out, fmt="sharegpt")  # replacing an earlier export keeps the modes
    assert_umask_modes(out, umask)


def test_stored_images_and_quality_tables_follow_the_umask(
    umask: int, tmp_path: Path, db_factory: sessionmaker[Session]
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    with transaction(db_factory) as db:
        for seed in (1, 2):
            add_image(
                db,
                images=LocalStore(images),
                data=png_bytes(seed),
                original_name=f"{seed}.png",
                pool=parse_pool("tainted"),
                now=utcnow(),
            )
    assert_umask_modes(images, umask)

    tables = tmp_path / "fit"
    tables.mkdir()
    write_table(pd.DataFrame({"player_id": ["p"], "verdict": ["correct"]}), tables / "turns.parquet")
    write_table(pd.DataFrame({"player_id": ["p"], "verdict": ["wrong"]}), tables / "turns.csv")
    assert_umask_modes(tables, umask)
