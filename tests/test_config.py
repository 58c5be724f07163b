"""Settings: defaults, environment, TOML file, validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gap.config import Settings


def test_defaults_match_the_paper() -> None:
    settings = Settings()
    assert settings.round_seconds == 120 and settings.session_images == 10
    assert settings.taint_rate == 0.5 and settings.theta == 0.8
    assert settings.model == "transformers:HuggingFaceTB/SmolVLM-256M-Instruct"
    assert settings.resolved_database_url.startswith(
        "sqlite:///"
    ) and settings.resolved_database_url.endswith("gap-data/gap.sqlite3")


def test_environment_and_toml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    toml = tmp_path / "gap.toml"
    toml.write_text('model = "openai:qwen2-vl"\nround_seconds = 60\ntaint_rate = 0.3\n')
    monkeypatch.setenv("GAP_CONFIG", str(toml))
    monkeypatch.setenv("GAP_ROUND_SECONDS", "30")
    monkeypatch.setenv("GAP_DATABASE_URL", "postgresql://u:p@db/gap")
    settings = Settings()
    assert settings.model == "openai:qwen2-vl" and settings.taint_rate == 0.3
    assert settings.round_seconds == 30  # environment beats the file
    assert settings.resolved_database_url == "postgresql+psycopg://u:p@db/gap"


@pytest.mark.parametrize(
    "name,value", [("GAP_TAINT_RATE", "1.5"), ("GAP_SESSION_IMAGES", "0"), ("GAP_ROUND_SECONDS", "-1")]
)
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.removeprefix("GAP_").lower()):
        Settings()
