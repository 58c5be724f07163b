"""The one logging setup: Rich on a terminal, plain lines elsewhere, or one JSON object per line.

``GAP_LOG_FORMAT=json`` is for log collectors (Loki, CloudWatch, Elasticsearch): every line is an
object with ``time``, ``level``, ``logger`` and ``message``, the request id of the request being served
(``request_id``), and the access log's ``method``, ``path``, ``status`` and ``duration_ms``. uvicorn's
loggers propagate here too (``gap serve`` starts uvicorn without a logging config of its own).
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal, TextIO

LogFormat = Literal["text", "json"]

request_id: ContextVar[str | None] = ContextVar("gap_request_id", default=None)
"""The id of the HTTP request being served (set by :class:`gap.web.access.AccessLog`)."""

REQUEST_FIELDS = ("method", "path", "status", "duration_ms", "client")


class _CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time, so a swapped stream (tests) is never stale."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


class JSONFormatter(logging.Formatter):
    """One JSON object per record; request fields come from the record's ``extra`` and context."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        current = getattr(record, "request_id", None) or request_id.get()
        if current is not None:
            entry["request_id"] = current
        for name in REQUEST_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _handler(fmt: LogFormat) -> logging.Handler:
    if fmt == "json":
        handler: logging.Handler = _CurrentStderrHandler()
        handler.setFormatter(JSONFormatter())
    elif sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, rich_tracebacks=True)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = _CurrentStderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._gap_format = fmt  # type: ignore[attr-defined]
    return handler


def setup_logging(level: str = "INFO", fmt: LogFormat = "text") -> None:
    """Configure the root logger; later calls change the level, and the format when it differs."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    ours = [h for h in root.handlers if hasattr(h, "_gap_format")]
    if ours and all(h._gap_format == fmt for h in ours):
        return
    for handler in ours:
        root.removeHandler(handler)
    root.addHandler(_handler(fmt))
    # huggingface_hub prints through a handler of its own and also propagates: each retry warning
    # would show twice. Its own handler stays; the copy through the root logger goes.
    logging.getLogger("huggingface_hub").propagate = False
    # Alembic narrates every migration step at INFO; only its warnings matter to a user.
    logging.getLogger("alembic").setLevel(logging.WARNING)
