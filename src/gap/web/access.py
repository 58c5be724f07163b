"""The access log: one line per request, with an ``X-Request-ID`` echoed (or made) for tracing.

A reverse proxy that sets ``X-Request-ID`` (nginx: ``$request_id``) gets the same id back and in
GAP's log lines; without one, GAP makes an id. Every log line written while the request is served
carries it too (:data:`gap.logs.request_id`), so a failure can be traced from proxy to model call.
"""

from __future__ import annotations

import logging
import re
import uuid

from starlette.types import ASGIApp, Receive, Scope, Send

from gap.logs import request_id
from gap.web._observe import serve_observed

log = logging.getLogger("gap.access")
HEADER = b"x-request-id"
_USABLE = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


def _incoming_id(scope: Scope) -> str:
    """The client's (proxy's) request id when it is a plain token, else a new one."""
    for name, value in scope.get("headers", ()):
        if name == HEADER:
            text = str(value.decode("latin-1"))
            if _USABLE.match(text):
                return text
    return uuid.uuid4().hex


class AccessLog:
    """Logs method, path, status and duration of every HTTP request at INFO on ``gap.access``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _incoming_id(scope)
        token = request_id.set(rid)

        def done(status: int, seconds: float) -> None:
            duration_ms = round(seconds * 1000, 2)
            client = scope.get("client")
            log.info(
                "%s %s %d %.1f ms",
                scope["method"],
                scope["path"],
                status,
                duration_ms,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": duration_ms,
                    "client": client[0] if client else None,
                },
            )

        try:
            await serve_observed(
                self.app, scope, receive, send, done, add_headers=[(HEADER, rid.encode("latin-1"))]
            )
        finally:
            request_id.reset(token)
