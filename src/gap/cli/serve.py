"""`gap serve`: the game's web server (with the background worker in a thread unless disabled)."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gap.cli._common import database, handle_errors, ready_model, settings
from gap.config import Settings
from gap.storage import image_store

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger(__name__)


@handle_errors
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    worker: Annotated[
        bool | None,
        typer.Option(
            "--worker/--no-worker",
            help="Run the background worker in this process (default: GAP_WORKER, true). Turn it off "
            "when a separate `gap worker` runs.",
            show_default=False,
        ),
    ] = None,
    adapter: Annotated[
        Path | None,
        typer.Option(help="A LoRA adapter folder from `gap train`, served on the model (GAP_MODEL_ADAPTER)."),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Server processes sharing the port, each with its own model. With more than one (and on "
            "PostgreSQL) the schema must be current: run `gap db upgrade` first.",
        ),
    ] = 1,
) -> None:
    """Run the game at http://HOST:PORT (on SQLite with one process, the database is upgraded first)."""
    import uvicorn

    from gap.services.game import utcnow
    from gap.services.worker import start_thread, worker_config
    from gap.web.app import create_app, require_current_schema
    from gap.web.metrics import multiprocess_metrics

    current = settings()
    if adapter is not None:
        current = current.model_copy(update={"model_adapter": str(adapter)})
        os.environ["GAP_MODEL_ADAPTER"] = str(adapter)  # the worker processes read their settings anew
    # uvicorn's loggers propagate to GAP's one setup (text or JSON); the app writes the access log.
    log_options: dict[str, Any] = {
        "log_config": None,
        "access_log": False,
        "log_level": current.log_level.lower(),
    }
    image_store(current, check=True)  # a missing bucket or bad credentials: one line, before serving
    app = None
    if workers == 1:
        app = create_app(current, model=ready_model(current))
    else:
        require_current_schema(current.resolved_database_url)
        _share_model_concurrency(current, workers)
    log.info("GAP is serving at http://%s:%d/  (API docs at /docs, model %s)", host, port, current.model)
    if current.model_adapter:
        log.info("with the adapter %s", current.model_adapter)
    stop = None
    if current.worker if worker is None else worker:
        _, stop = start_thread(
            database(current), worker_config(current), interval=current.worker_interval, clock=utcnow
        )
        log.info("background worker: a pass every %g s", current.worker_interval)
    try:
        if app is None:
            log.info("%d server processes", workers)
            from uvicorn.supervisors import Multiprocess

            with multiprocess_metrics():  # one scrape of /metrics adds up every worker
                config = uvicorn.Config(
                    "gap.web.app:replica_app",
                    factory=True,
                    workers=workers,
                    host=host,
                    port=port,
                    **log_options,
                )
                Multiprocess(config, sockets=[_tcp_listener(config)]).run()
        else:
            uvicorn.run(app, host=host, port=port, **log_options)
    finally:
        if stop is not None:
            stop.set()


def _tcp_listener(config: uvicorn.Config) -> socket.socket:
    """uvicorn's shared listening socket, marked IPPROTO_TCP.

    uvicorn (``--workers``) makes it with protocol 0, and asyncio sets ``TCP_NODELAY`` only on
    connections accepted from a socket whose protocol is TCP: without it, Nagle's algorithm held
    every response's body behind its headers until the client's delayed ACK, about 40 ms a request.
    """
    bound = config.bind_socket()
    listener = socket.socket(bound.family, bound.type, socket.IPPROTO_TCP, fileno=bound.detach())
    listener.set_inheritable(True)
    return listener


def _share_model_concurrency(current: Settings, workers: int) -> None:
    """Each worker bounds its own model calls; one ``openai:`` server behind N workers would see N x
    ``GAP_MODEL_CONCURRENCY``. Unless the user set it, each worker gets an N-th of it (at least 1).
    A ``transformers:`` model is loaded once per worker, so its bound stays as it is."""
    if "model_concurrency" in current.model_fields_set or not current.model.startswith("openai:"):
        return
    share = max(1, current.model_concurrency // workers)
    os.environ["GAP_MODEL_CONCURRENCY"] = str(share)  # the worker processes read their settings anew
    log.info("model concurrency: %d per worker (%d in all)", share, current.model_concurrency)
