"""`gap demo`: a playable game in one command, on a fresh folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from gap.cli._common import console, database, handle_errors, ready_model
from gap.config import Settings
from gap.logs import setup_logging
from gap.storage import image_store

PROG_NAME_VARIABLE = "GAP_PROG_NAME"
"""How the user started the demo when it was not `gap demo` (scripts/demo sets it), for hints."""


@handle_errors
def demo(
    model: Annotated[
        str | None,
        typer.Option(help="Model folder or hub id (default: GAP_MODEL, else SmolVLM-256M-Instruct)."),
    ] = None,
    tiny: Annotated[
        bool,
        typer.Option(
            help="Use a tiny random-weight model built offline (for trying the game without weights)."
        ),
    ] = False,
    adapter: Annotated[
        Path | None,
        typer.Option(help="A LoRA adapter folder from `gap train`, served on the model (GAP_MODEL_ADAPTER)."),
    ] = None,
    folder: Annotated[Path, typer.Option("--dir", help="Folder for the demo database and images.")] = Path(
        "gap-demo"
    ),
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Set up a demo (SQLite database, bundled photos in both pools, a model) and serve it."""
    import uvicorn

    from gap.services.demo import add_demo_images
    from gap.web.app import create_app

    overrides: dict[str, object] = {"data_dir": folder, "database_url": None}
    if tiny:
        from gap.models.tiny import make_tiny_vlm

        overrides["model"] = f"transformers:{make_tiny_vlm(folder / 'tiny-vlm')}"
        overrides["max_new_tokens"] = 24  # random weights write noise; keep it short
    elif model is not None:
        explicit = model.startswith(("transformers:", "openai:"))
        overrides["model"] = model if explicit else f"transformers:{model}"  # a folder or a hub id
    if adapter is not None:
        overrides["model_adapter"] = str(adapter)
    current = Settings(**overrides)  # type: ignore[arg-type]
    setup_logging(current.log_level, current.log_format)
    command = os.environ.get(PROG_NAME_VARIABLE) or "gap demo"
    vlm = ready_model(
        current,
        offline_hint=f"Without network, run `{command} --tiny` (a random-weight model built offline) "
        f"or `{command} --model DIR` (a local model folder).",
    )
    factory = database(current)
    added = add_demo_images(factory, image_store(current, check=True))
    console.print(f"demo folder {folder.resolve()}: {added} new image(s)")
    app = create_app(current, model=vlm)
    console.print(f"\n[bold green]Open http://{host}:{port}/ to play[/bold green]  (API docs: /docs)\n")
    uvicorn.run(app, host=host, port=port, log_level="warning")
