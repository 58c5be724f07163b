"""Errors reach the terminal as one clean line, brackets and all."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from gap.cli._common import handle_errors
from gap.errors import ConfigError


def test_gap_errors_print_verbatim_and_exit_1() -> None:
    app = typer.Typer()

    @app.command()
    @handle_errors
    def broken() -> None:
        raise ConfigError("local models need torch: pip install 'gap[local]'")

    result = CliRunner().invoke(app, [])
    assert result.exit_code == 1
    assert "error: local models need torch: pip install 'gap[local]'" in result.output
    assert "Traceback" not in result.output
