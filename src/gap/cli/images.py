"""`gap images`: fill and inspect the tainted and untainted pools."""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypedDict

import httpx
import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table
from sqlalchemy.orm import Session, sessionmaker

from gap.cli._common import console, database, handle_errors, settings
from gap.config import Settings
from gap.db.engine import transaction
from gap.errors import Conflict, ImageError, InputError
from gap.game import Pool
from gap.services.game import utcnow
from gap.services.image_import import (
    TAINTED_MAX_OBJECTS,
    choose,
    coco_meta,
    coco_pool,
    load_source,
    read_coco,
    read_manifest,
    source_name,
)
from gap.services.images import add_image, iter_image_files, list_images, parse_pool
from gap.storage import Store, image_store

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
    store = image_store(current, check=True)
    files = list(iter_image_files(paths))
    missing = [p for p in paths if not p.exists()]
    added, skipped = 0, 0
    for path in missing:
        console.print(f"[yellow]skipped[/yellow] {escape(str(path))}: no such file or folder")
        skipped += 1
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("adding images", total=len(files))
        for path in files:
            if path.exists():
                stored = _store(
                    progress, factory, current, store, str(path), path.read_bytes, path.name, chosen, None
                )
                if stored:
                    added += 1
                else:
                    skipped += 1
            progress.advance(task)
    console.print(f"added {added} image(s) to the {chosen.value} pool, skipped {skipped}")
    if added == 0 and skipped:
        raise typer.Exit(1)


def _store(
    progress: Progress,
    factory: sessionmaker[Session],
    current: Settings,
    store: Store,
    label: str,
    read: Callable[[], bytes],
    name: str,
    pool: Pool,
    meta: dict[str, object] | None,
) -> bool:
    """Read, downscale and add one image in its own transaction; a bad or duplicate one is reported."""
    try:
        data = read()
        with transaction(factory) as db:
            add_image(
                db,
                images=store,
                data=data,
                original_name=name,
                pool=pool,
                now=utcnow(),
                max_side=current.image_max_side,
                meta=meta,
            )
        return True
    except (ImageError, Conflict) as exc:
        progress.console.print(f"[yellow]skipped[/yellow] {escape(label)}: {escape(exc.message)}")
        return False


def _summary(added: Counter[Pool], skipped: int) -> None:
    pools = ", ".join(f"{added[pool]} {pool.value}" for pool in Pool)
    console.print(f"added {sum(added.values())} image(s) ({pools}), skipped {skipped}")
    if not added and skipped:
        raise typer.Exit(1)


@app.command("import")
@handle_errors
def import_(
    manifest: Annotated[
        Path, typer.Argument(help="A .csv (with a header) or .jsonl manifest.", exists=True, dir_okay=False)
    ],
) -> None:
    """Add the images a manifest lists: `path` (relative to the manifest) or `url`, `pool`, `tags`.

    Tags are a JSON list, or `;`-separated in a CSV; other columns are kept as image metadata. URLs
    are downloaded; a row that fails is reported and skipped.
    """
    current = settings()
    factory = database(current, expect_data=False)
    store = image_store(current, check=True)
    rows = list(read_manifest(manifest))
    added: Counter[Pool] = Counter()
    skipped = 0
    with (
        Progress(console=console, transient=True) as progress,
        httpx.Client(timeout=30.0, follow_redirects=True) as client,
    ):
        task = progress.add_task("importing images", total=len(rows))
        for row in rows:
            if isinstance(row, InputError):
                progress.console.print(f"[yellow]skipped[/yellow] {escape(row.message)}")
                skipped += 1
            elif _store(
                progress,
                factory,
                current,
                store,
                row.source,
                functools.partial(load_source, client, row.source, manifest.parent),
                source_name(row.source),
                row.pool,
                row.meta,
            ):
                added[row.pool] += 1
            else:
                skipped += 1
            progress.advance(task)
    _summary(added, skipped)


@app.command("import-coco")
@handle_errors
def import_coco(
    annotations: Annotated[
        Path, typer.Option(help="A COCO instances_*.json file (read streamed).", exists=True, dir_okay=False)
    ],
    images: Annotated[
        Path, typer.Option(help="The folder holding its images.", exists=True, file_okay=False)
    ],
    tainted_max_objects: Annotated[
        int,
        typer.Option(min=0, help="Images with at most this many annotated objects go to the tainted pool."),
    ] = TAINTED_MAX_OBJECTS,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Import a random sample of this many images.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the --limit sample.")] = 0,
) -> None:
    """Both pools from a COCO dataset, the authors' way: few annotated objects means tainted.

    Each image keeps its `coco_id`, object count and category names as metadata; images listed but
    missing from the folder are reported and skipped.
    """
    current = settings()
    factory = database(current, expect_data=False)
    store = image_store(current, check=True)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("reading annotations", total=annotations.stat().st_size)
        with annotations.open(encoding="utf-8") as stream:
            listed, categories = read_coco(stream, lambda chars: progress.advance(task, chars))
    chosen = choose(listed, limit, seed)
    added: Counter[Pool] = Counter()
    skipped = 0
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("adding images", total=len(chosen))
        for entry in chosen:
            path = images / entry.file_name
            pool = coco_pool(entry, tainted_max_objects)
            if not path.is_file():
                progress.console.print(
                    f"[yellow]skipped[/yellow] {escape(entry.file_name)}: not in {escape(str(images))}"
                )
                skipped += 1
            elif _store(
                progress,
                factory,
                current,
                store,
                entry.file_name,
                path.read_bytes,
                path.name,
                pool,
                coco_meta(entry, categories),
            ):
                added[pool] += 1
            else:
                skipped += 1
            progress.advance(task)
    _summary(added, skipped)


class ImageRow(TypedDict):
    id: str
    pool: str
    name: str
    width: int
    height: int
    enabled: bool
    meta: dict[str, object]


@app.command("list")
@handle_errors
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON array (full ids) instead.")] = False,
) -> None:
    """List every image with its pool, size and state (and, with --json, its metadata: COCO images'
    `coco_id`). Ids are printed whole, to be copied."""
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
                "meta": image.meta or {},
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
