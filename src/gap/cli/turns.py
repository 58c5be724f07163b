"""`gap turns`: the turns table, GAP's interchange format for quality work."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gap.cli._common import console, database, handle_errors, settings

app = typer.Typer(help="The turns table (one row per judged turn).", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Keep `turns` a command group even with a single command in it."""


@app.command("export")
@handle_errors
def export(
    file: Annotated[Path, typer.Argument(help="Output file: .csv or .parquet (chosen by extension).")],
    round_: Annotated[
        int | None,
        typer.Option("--round", help="Only this round of collection (`gap rounds`); default: all."),
    ] = None,
) -> None:
    """Write every judged turn from the database as a turns table (column collection_round: its round)."""
    from gap.quality._table import table_format, write_table
    from gap.services.quality import export_turns

    table_format(file)  # fail on a bad extension before touching the database
    turns = export_turns(database(settings()), collection_round=round_)
    write_table(turns, file)
    console.print(f"wrote {len(turns)} turn(s) to {file}")
