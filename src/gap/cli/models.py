"""`gap models`: model folders GAP can play against without downloading anything."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gap.cli._common import handle_errors

app = typer.Typer(help="VLM backends and test models.", no_args_is_help=True)


@app.command("make-tiny")
@handle_errors
def make_tiny(
    directory: Annotated[
        Path,
        typer.Argument(
            metavar="DIR",
            help="Folder to write the model to (created if missing; existing files are overwritten).",
        ),
    ],
) -> None:
    """Build a tiny random-weight SmolVLM-style model offline; use it as `transformers:DIR` or serve it.

    Its answers are gibberish: it is for trying the game and for tests, not for collecting data.
    """
    from gap.models.tiny import make_tiny_vlm

    typer.echo(make_tiny_vlm(directory).resolve())
