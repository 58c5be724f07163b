"""`gap serve`: the game's web server."""

from __future__ import annotations

from typing import Annotated

import typer

from gap.cli._common import console, handle_errors, ready_model, settings


@handle_errors
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Run the game at http://HOST:PORT (the database is upgraded first when needed)."""
    import uvicorn

    from gap.web.app import create_app

    current = settings()
    app = create_app(current, model=ready_model(current))
    console.print(f"GAP is serving at http://{host}:{port}/  (API docs at /docs, model {current.model})")
    uvicorn.run(app, host=host, port=port, log_level=current.log_level.lower())
