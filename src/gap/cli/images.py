"""`gap images`: fill and inspect the tainted and untainted pools."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from gap.cli._common import console, database, handle_errors, settings
from gap.db.engine import transaction
from gap.errors import Conflict, ImageError
from gap.services.game import utcnow
from gap.services.images import add_image, iter_image_files, list_images, parse_pool

app = typer.Typer(help="Image pools.", no_args_is_help=True)


@app.command("add")
@handle_errors
def add(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders (searched recursively).")],
    pool: Annotated[str, typer.Option(help="tainted (simple images, used to test players) or untainted.")],
) -> None:
    """Add images to a pool. Bad or duplicate files are reported and skipped; the rest are added."""
    chosen = parse_pool(pool)
    current = settings()
    factory = database(current)
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


@app.command("list")
@handle_errors
def list_() -> None:
    """List every image with its pool, size and state."""
    factory = database(settings())
    with transaction(factory) as db:
        images = list_images(db)
        table = Table("id", "pool", "name", "size", "enabled")
        for image in images:
            table.add_row(
                image.id,
                image.pool,
                image.original_name,
                f"{image.width}x{image.height}",
                "yes" if image.enabled else "no",
            )
    console.print(table)
    typer.echo(f"{len(images)} image(s)")
