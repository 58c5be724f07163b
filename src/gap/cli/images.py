"""`gap images`: fill and inspect the tainted and untainted pools."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, TypedDict

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from gap.cli._common import console, database, handle_errors, settings
from gap.db.engine import transaction
from gap.errors import Conflict, ImageError
from gap.services.game import utcnow
from gap.services.images import add_image, iter_image_files, list_images, parse_pool

app = typer.Typer(help="Image pools.", no_args_is_help=True)
stdout = Console(soft_wrap=False)  # listings go to stdout, to be piped


@app.command("add")
@handle_errors
def add(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders (searched recursively).")],
    pool: Annotated[str, typer.Option(help="tainted (simple images, used to test players) or untainted.")],
) -> None:
    """Add images to a pool. Bad or duplicate files are reported and skipped; the rest are added."""
    chosen = parse_pool(pool)
    current = settings()
    factory = database(current, expect_data=False)
    files = list(iter_image_files(paths))
    missing = [p for p in paths if not p.exists()]
    added, skipped = 0, 0
    for path in missing:
        console.print(f"[yellow]skipped[/yellow] {escape(str(path))}: no such file or folder")
        skipped += 1
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("adding images", total=len(files))
        for path in files:
            if not path.exists():
                progress.advance(task)
                continue
            try:
                with transaction(factory) as db:
                    add_image(
                        db,
                        images_dir=current.images_dir,
                        data=path.read_bytes(),
                        original_name=path.name,
                        pool=chosen,
                        now=utcnow(),
                    )
                added += 1
            except (ImageError, Conflict) as exc:
                progress.console.print(f"[yellow]skipped[/yellow] {escape(str(path))}: {escape(exc.message)}")
                skipped += 1
            progress.advance(task)
    console.print(f"added {added} image(s) to the {chosen.value} pool, skipped {skipped}")
    if added == 0 and skipped:
        raise typer.Exit(1)


class ImageRow(TypedDict):
    id: str
    pool: str
    name: str
    width: int
    height: int
    enabled: bool


@app.command("list")
@handle_errors
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON array (full ids) instead.")] = False,
) -> None:
    """List every image with its pool, size and state. Ids are printed whole, to be copied."""
    factory = database(settings())
    with transaction(factory) as db:
        rows: list[ImageRow] = [
            {
                "id": image.id,
                "pool": image.pool,
                "name": image.original_name,
                "width": image.width,
                "height": image.height,
                "enabled": image.enabled,
            }
            for image in list_images(db)
        ]
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    # The id column never shrinks; the name folds onto more lines when the terminal is narrow.
    table = Table(box=box.SIMPLE)
    table.add_column("id", no_wrap=True, min_width=max((len(row["id"]) for row in rows), default=2))
    table.add_column("pool", no_wrap=True)
    table.add_column("name", overflow="fold")
    table.add_column("size", no_wrap=True)
    table.add_column("enabled", no_wrap=True)
    for row in rows:
        table.add_row(
            row["id"],
            row["pool"],
            escape(row["name"]),
            f"{row['width']}x{row['height']}",
            "yes" if row["enabled"] else "no",
        )
    stdout.print(table)
    typer.echo(f"{len(rows)} image(s)")
