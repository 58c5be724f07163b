"""`gap worker`: the background jobs (abandoned sessions, settlement, dashboard fit) as a process."""

from __future__ import annotations

import threading
from typing import Annotated

import typer

from gap.cli._common import console, database, handle_errors, settings


@handle_errors
def worker(
    once: Annotated[bool, typer.Option("--once", help="Run one pass and exit.")] = False,
) -> None:
    """Close abandoned sessions, credit due players' points and refresh the dashboard's fit, every
    GAP_WORKER_INTERVAL seconds. Several workers may share one PostgreSQL database."""
    from gap.services.game import utcnow
    from gap.services.worker import run_forever, run_pass, worker_config

    current = settings()
    factory = database(current)
    config = worker_config(current)
    if once:
        report = run_pass(factory, config, utcnow())
        settled = report.settlement
        console.print(
            f"closed {report.closed} abandoned sessions; "
            + (f"credited {settled.sessions} sessions of {settled.players} players; " if settled else "")
            + ("stored a new quality fit" if report.refitted else "quality fit unchanged")
        )
        return
    console.print(f"GAP worker: a pass every {current.worker_interval:g} s (Ctrl-C stops)")
    try:
        run_forever(factory, config, interval=current.worker_interval, stop=threading.Event(), clock=utcnow)
    except KeyboardInterrupt:
        console.print("worker stopped")
