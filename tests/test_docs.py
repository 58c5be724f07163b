"""Docs beside code: every setting and every CLI command is documented."""

from __future__ import annotations

from pathlib import Path

import typer.main

from gap.cli import app
from gap.config import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_is_in_the_readme_table() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [
        f"GAP_{name.upper()}" for name in Settings.model_fields if f"`GAP_{name.upper()}`" not in readme
    ]
    assert missing == []


def test_every_setting_has_a_description() -> None:
    assert [name for name, field in Settings.model_fields.items() if not field.description] == []


def _commands(group: object, prefix: str = "") -> list[str]:
    names = []
    for name, command in getattr(group, "commands", {}).items():
        full = f"{prefix}{name}"
        names.append(full)
        names += _commands(command, full + " ")
    return names


def test_every_cli_command_is_in_the_cli_reference() -> None:
    reference = (ROOT / "docs" / "cli.md").read_text()
    commands = _commands(typer.main.get_command(app))
    assert commands, "the CLI has no commands?"
    missing = [name for name in commands if f"gap {name}" not in reference]
    assert missing == []
