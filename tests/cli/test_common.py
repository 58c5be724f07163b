"""Errors reach the terminal as one clean line, brackets and all; library warnings print once."""

from __future__ import annotations

import subprocess
import sys

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


def test_hub_warnings_print_once() -> None:
    """In a fresh process, as in a user's run: the hub's own handler holds that process's stderr."""
    script = (
        "from gap.logs import setup_logging\n"
        "setup_logging('INFO')\n"
        "from huggingface_hub.utils import logging as hub_logging\n"
        "hub_logging.get_logger('huggingface_hub.utils._http').warning('Retrying in 1s [Retry 1/5].')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("Retrying in 1s") == 1, done.stderr
