"""Commands run beside the demo's folder, on an empty default data folder, say where the data is."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fixtures.game import png_bytes
from gap.cli import app
from gap.config import get_settings

UNSET: dict[str, str | None] = {"GAP_DATA_DIR": None, "GAP_DATABASE_URL": None, "GAP_CONFIG": None}
HINT = "GAP_DATA_DIR=gap-demo gap"


@pytest.fixture
def beside_the_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder holding the demo's data folder (one image), as after `scripts/demo`."""
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    (tmp_path / "a.png").write_bytes(png_bytes(1))
    added = CliRunner().invoke(
        app, ["images", "add", "a.png", "--pool", "tainted"], env={**UNSET, "GAP_DATA_DIR": "gap-demo"}
    )
    assert added.exit_code == 0, added.output
    return tmp_path


def test_an_empty_default_folder_points_at_the_demo(beside_the_demo: Path) -> None:
    for args in (["images", "list"], ["turns", "export", "turns.csv"]):
        result = CliRunner().invoke(app, args, env=UNSET)
        assert result.exit_code == 0, result.output
        assert "gap-data/ (the default data folder) has no images, but gap-demo/ has 1" in result.output
        assert HINT in result.output
    pointed = CliRunner().invoke(app, ["images", "list"], env={**UNSET, "GAP_DATA_DIR": "gap-demo"})
    assert pointed.exit_code == 0 and "1 image(s)" in pointed.output and HINT not in pointed.output


def test_no_hint_when_the_folder_was_chosen_or_is_being_filled(beside_the_demo: Path) -> None:
    chosen = CliRunner().invoke(app, ["images", "list"], env={**UNSET, "GAP_DATA_DIR": "gap-data"})
    assert chosen.exit_code == 0 and "0 image(s)" in chosen.output and HINT not in chosen.output
    (beside_the_demo / "b.png").write_bytes(png_bytes(2))
    adding = CliRunner().invoke(app, ["images", "add", "b.png", "--pool", "untainted"], env=UNSET)
    assert adding.exit_code == 0 and HINT not in adding.output
    filled = CliRunner().invoke(app, ["images", "list"], env=UNSET)
    assert "1 image(s)" in filled.output and HINT not in filled.output
