"""`gap rounds`: open and inspect rounds of collection (which model is in the loop)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gap.cli._common import console, database, handle_errors, settings
from gap.db.engine import transaction
from gap.errors import NotFound
from gap.services.game import utcnow
from gap.services.rounds import RoundStats, round_stats, start_round

app = typer.Typer(help="Rounds of collection: the model in the loop, round by round.", no_args_is_help=True)
stdout = Console(soft_wrap=False)


def _row(stats: RoundStats) -> dict[str, Any]:
    row = asdict(stats)
    row["started_at"] = stats.started_at.isoformat()
    return row


@app.command("start")
@handle_errors
def start(
    model: Annotated[
        str, typer.Option(help="Model spec, as GAP_MODEL: transformers:<folder> or openai:<name>.")
    ],
    adapter: Annotated[
        str | None, typer.Option(help="LoRA adapter folder (`gap train` output) on a transformers: model.")
    ] = None,
    note: Annotated[str | None, typer.Option(help="A free note, e.g. what the model was tuned on.")] = None,
) -> None:
    """Open a new round: sessions started from now on, on every replica, play against its model;
    sessions already running finish on the model they started with."""
    factory = database(settings(), expect_data=False)
    with transaction(factory) as db:
        row = start_round(db, model=model, adapter=adapter, note=note, now=utcnow())
        number = row.id
    label = f"{model} + {adapter}" if adapter else model
    console.print(f"round {number} started: {escape(label)}")


@app.command("list")
@handle_errors
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON array instead.")] = False,
) -> None:
    """Every round with its model and what was collected in it."""
    factory = database(settings(), expect_data=False)
    with transaction(factory) as db:
        rows = round_stats(db)
    if as_json:
        typer.echo(json.dumps([_row(r) for r in rows], indent=2))
        return
    table = Table(box=box.SIMPLE)
    for name in ("round", "model", "adapter", "started", "sessions", "judged", "untainted wrong"):
        table.add_column(name, overflow="fold")
    for r in rows:
        table.add_row(
            str(r.number),
            escape(r.model),
            escape(r.adapter or "-"),
            r.started_at.strftime("%Y-%m-%d %H:%M"),
            str(r.sessions),
            str(r.judged),
            f"{r.untainted_wrong}/{r.untainted_judged}",
        )
    stdout.print(table)
    typer.echo(f"{len(rows)} round(s)" + (f"; current: {rows[-1].number}" if rows else ""))


@app.command("show")
@handle_errors
def show(
    number: Annotated[int, typer.Argument(help="The round number (from `gap rounds list`).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead.")] = False,
) -> None:
    """One round: its model, adapter, note and what was collected in it."""
    factory = database(settings(), expect_data=False)
    with transaction(factory) as db:
        rows = round_stats(db)
    found = [r for r in rows if r.number == number]
    if not found:
        raise NotFound(f"no round {number}; `gap rounds list` shows them")
    row = _row(found[0])
    row["current"] = found[0] is rows[-1]
    if as_json:
        typer.echo(json.dumps(row, indent=2))
        return
    for key, value in row.items():
        typer.echo(f"{key}: {'-' if value is None else value}")
