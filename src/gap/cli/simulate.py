"""`gap simulate`: a player population with known truth, to check the quality estimators."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

from gap.cli._common import console, handle_errors
from gap.errors import InputError


@handle_errors
def simulate(
    out: Annotated[
        Path, typer.Argument(help="Folder for turns, truth, players, images tables and params.json.")
    ],
    players: Annotated[int, typer.Option(help="Players in the population.")] = 200,
    images: Annotated[int, typer.Option(help="Images, split between the tainted and untainted pools.")] = 100,
    sessions: Annotated[
        int,
        typer.Option(
            help="Sessions played in total (each player plays at least one when sessions >= players)."
        ),
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same tables.")] = 0,
    fmt: Annotated[str, typer.Option("--format", help="Table format: parquet or csv.")] = "parquet",
    careless: Annotated[float, typer.Option(help="Share of players who answer at random.")] = 0.1,
    spammers: Annotated[float, typer.Option(help="Share of players who always say Wrong.")] = 0.03,
    shared_questions: Annotated[
        float, typer.Option(help="Share of untainted questions that are popular ones asked by many players.")
    ] = 0.0,
) -> None:
    """Simulate a population and its game play; write the turns table and the truth behind it."""
    from gap.quality import simulate as run

    if fmt not in ("parquet", "csv"):
        raise InputError(f"--format must be parquet or csv, got {fmt!r}")
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("simulating sessions", total=sessions)
        sim = run(
            n_players=players,
            n_images=images,
            n_sessions=sessions,
            careless_rate=careless,
            spammer_rate=spammers,
            shared_question_rate=shared_questions,
            random_state=seed,
            on_progress=lambda done, _total: progress.update(task, completed=done),
        )
        paths = sim.write(out, fmt)
    console.print(f"simulated {len(sim.turns)} turns by {players} players on {images} images")
    for path in paths:
        typer.echo(str(path))
