"""What every command shares: settings, the database, and turning GAP errors into clean exits."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy.orm import Session, sessionmaker

from gap.config import Settings
from gap.db.engine import make_engine, make_sessionmaker
from gap.db.migrate import is_current, upgrade
from gap.errors import GapError
from gap.logs import setup_logging
from gap.models.base import VisionChatModel

P = ParamSpec("P")
R = TypeVar("R")
console = Console(stderr=True, soft_wrap=True)


def handle_errors(command: Callable[P, R]) -> Callable[P, R]:
    """A command raising :class:`GapError` prints one red line and exits 1, without a traceback."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except GapError as exc:
            console.print(f"[red]error:[/red] {escape(exc.message)}")
            raise typer.Exit(1) from None

    return wrapper


def settings() -> Settings:
    """Read fresh for each command (a CLI run is one command; tests invoke many in one process)."""
    current = Settings()
    setup_logging(current.log_level)
    return current


def database(current: Settings, *, migrate: bool = True) -> sessionmaker[Session]:
    """A session factory on the configured database, brought to the newest schema first."""
    engine = make_engine(current.resolved_database_url)
    if migrate and not is_current(engine):
        upgrade(current.resolved_database_url)
    return make_sessionmaker(engine)


def ready_model(current: Settings) -> VisionChatModel:
    """The configured model, with local weights loaded now rather than inside a player's first question
    (whose answer timeout the load would eat). A bad spec or folder fails here, before serving."""
    from gap.models.factory import load_model

    with console.status(f"loading model {current.model} ..."):
        model = load_model(current.model, current)
        preload = getattr(model, "load", None)  # only local backends have weights to load
        if callable(preload):
            preload()
    return model
