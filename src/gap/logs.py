"""The one logging setup: Rich on a terminal, plain lines elsewhere."""

from __future__ import annotations

import logging
import sys
from typing import TextIO


class _CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time, so a swapped stream (tests) is never stale."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def setup_logging(level: str = "INFO") -> None:
    """Configure the root logger once; later calls only change the level."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    if getattr(root, "_gap_configured", False):
        return
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, rich_tracebacks=True)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = _CurrentStderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    # huggingface_hub prints through a handler of its own and also propagates: each retry warning
    # would show twice. Its own handler stays; the copy through the root logger goes.
    logging.getLogger("huggingface_hub").propagate = False
    # Alembic narrates every migration step at INFO; only its warnings matter to a user.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    root._gap_configured = True  # type: ignore[attr-defined]
