"""Errors reach the terminal as one clean line, brackets and all; library warnings print once."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from gap.cli._common import handle_errors
from gap.errors import ConfigError
from gap.logs import setup_logging


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


def test_hub_warnings_print_once(capfd: pytest.CaptureFixture[str]) -> None:
    from huggingface_hub.utils import logging as hub_logging

    setup_logging("INFO")
    hub_logging.get_logger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry 1/5].")
    assert capfd.readouterr().err.count("Retrying in 1s") == 1
