"""What every command shares: settings, the database, and turning GAP errors into clean exits."""

from __future__ import annotations

import functools
import os
import shlex
import sqlite3
import sys
import threading
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import ParamSpec, TypeVar

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy import func, make_url, select
from sqlalchemy.orm import Session, sessionmaker

from gap.config import Settings
from gap.db.engine import make_engine, make_sessionmaker, reading
from gap.db.migrate import is_current, upgrade
from gap.db.models import Image
from gap.errors import ConfigError, GapError
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
    setup_logging(current.log_level, current.log_format)
    return current


def database(current: Settings, *, migrate: bool = True, expect_data: bool = True) -> sessionmaker[Session]:
    """A session factory on the configured database, brought to the newest schema first.

    ``expect_data``: the command reads the pools, so an empty default folder beside one with images
    (the demo's) gets a hint rather than silent zeros.
    """
    engine = make_engine(current.resolved_database_url)
    if migrate and not is_current(engine):
        upgrade(current.resolved_database_url)
    factory = make_sessionmaker(engine)
    if expect_data:
        hint_other_data(current, factory)
    return factory


def count_images(database_file: Path) -> int:
    """Images in another folder's SQLite database, read-only; 0 when it is not a GAP database."""
    try:
        with closing(sqlite3.connect(f"file:{database_file}?mode=ro", uri=True)) as conn:
            row = conn.execute("SELECT count(*) FROM images").fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0])


def hint_other_data(current: Settings, factory: sessionmaker[Session]) -> None:
    """When the default data folder has no images but a folder beside it does, say how to use that one."""
    if current.database_url or "data_dir" in current.model_fields_set:
        return  # the user chose where the data is
    with reading(factory) as db:
        if db.scalar(select(func.count()).select_from(Image)):
            return
    here = current.data_dir.resolve()
    database_file = Path(make_url(current.resolved_database_url).database or "").name
    try:
        candidates = sorted(p / database_file for p in here.parent.iterdir() if p != here)
        others = [(db.parent, n) for db in candidates if db.is_file() and (n := count_images(db))]
    except OSError:  # an unreadable parent folder: no hint rather than a failed command
        return
    if not others:
        return
    folder, count = others[0]
    ran_gap = Path(sys.argv[0]).name == "gap"
    command = shlex.join(["gap", *sys.argv[1:]]) if ran_gap else "gap ..."
    console.print(
        f"[yellow]note: {escape(str(current.data_dir))}/ (the default data folder) has no images, but "
        f"{escape(folder.name)}/ has {count}; to use it: GAP_DATA_DIR={escape(folder.name)} {escape(command)}"
        "[/yellow]"
    )


def ready_model(current: Settings, *, offline_hint: str | None = None) -> VisionChatModel:
    """The configured model, with local weights loaded now rather than inside a player's first question
    (whose answer timeout the load would eat). A bad spec or folder fails here, before serving.

    ``offline_hint`` ends the message when a hub model can be neither found in the cache nor downloaded.
    """
    from gap.models.factory import load_ready_model

    check_hub_model(current.model, offline_hint=offline_hint or OFFLINE_HINT)
    with console.status(f"loading model {current.model} ..."):
        return load_ready_model(current.model, current)


OFFLINE_HINT = "Without network, set GAP_MODEL to a local model folder (transformers:DIR)."
HUB_PROBE_SECONDS = 5.0


def hub_repo(spec: str) -> str | None:
    """The Hugging Face Hub repository a ``transformers:`` spec downloads, or None for a local folder."""
    kind, sep, target = spec.partition(":")
    target = target.strip()
    if kind != "transformers" or not sep or not target or Path(target).expanduser().exists():
        return None
    return target


def hub_unreachable(endpoint: str, timeout: float = HUB_PROBE_SECONDS) -> str | None:
    """Why ``endpoint`` cannot be reached (one short request), or None when it answers at all.

    The request runs in a daemon thread: no socket timeout bounds a hanging name lookup.
    """
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            httpx.head(endpoint, timeout=timeout)
            outcome.append(None)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            outcome.append(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)

    thread = threading.Thread(target=probe, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 1)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"


def check_hub_model(spec: str, *, offline_hint: str) -> None:
    """Decide in seconds how a hub model loads, instead of minutes of download retries without network.

    A model in the local cache loads from it (offline mode) when the Hub does not answer; one that is
    not cached needs the Hub, and its absence is a :class:`ConfigError` ending with ``offline_hint``.
    """
    repo = hub_repo(spec)
    if repo is None:
        return
    try:
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        return  # no local-model extra: loading says what to install

    if constants.HF_HUB_OFFLINE:
        return  # loading reads the cache only, and fails at once when the model is not there
    try:
        snapshot_download(repo, local_files_only=True)
        cached = True
    except LocalEntryNotFoundError:
        cached = False
    reason = hub_unreachable(constants.ENDPOINT)
    if reason is None:
        return
    if not cached:
        raise ConfigError(
            f"model {repo} is not in the local Hugging Face cache, and the Hub at {constants.ENDPOINT} "
            f"cannot be reached to download it ({reason}).\n{offline_hint}"
        )
    console.print(
        f"[yellow]the Hub at {escape(constants.ENDPOINT)} cannot be reached; "
        f"using the cached {escape(repo)}[/yellow]"
    )
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True  # read at each request by huggingface_hub and transformers
