"""`gap lab run`: the whole GAP loop on a synthetic world with known truth, measured end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gap.cli._common import console, handle_errors

app = typer.Typer(help="The GAP loop end to end on a synthetic world whose truth is known (issue 13).")


@app.command("run")
@handle_errors
def run(
    out: Annotated[
        Path, typer.Option(help="Folder for the report (report.md, report.json, PNGs) and the run.")
    ],
    size: Annotated[
        str, typer.Option(help="ci (minutes on 2 CPU cores) or full (under half an hour).")
    ] = "ci",
    seed: Annotated[int, typer.Option(help="Seed of the world, the players, the splits and training.")] = 0,
    cache: Annotated[
        Path | None,
        typer.Option(help="Folder of cached base models (default: ~/.cache/gap/lab, by the recipe's hash)."),
    ] = None,
    threads: Annotated[
        int, typer.Option(min=1, help="torch threads (1 is fastest on a shared machine).")
    ] = 1,
) -> None:
    """Serve a base model with known blind spots, let simulated players play it over HTTP, filter,
    export, fine-tune and evaluate; write OUT/report.md, OUT/report.json and PNGs."""
    from gap.lab.loop import SizeName, run_lab

    if size not in ("ci", "full"):
        raise typer.BadParameter(f"unknown size {size!r}: ci or full", param_hint="--size")
    size_name: SizeName = "ci" if size == "ci" else "full"
    data = run_lab(size_name, out, seed=seed, cache=cache, threads=threads)
    weak = data["gain_weak"] or {}
    console.print(
        f"weak types {', '.join(data['weak_types'])}: gain {weak.get('diff')} "
        f"(95% CI {weak.get('ci_low')}..{weak.get('ci_high')}, p {weak.get('p_value')})"
    )
    typer.echo(str(out / "report.md"))
