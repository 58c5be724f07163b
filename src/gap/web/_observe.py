"""Serve one HTTP request and report its status and duration, for the middlewares that log and count.

A response's status is known only when its start message passes; a request that raises before
that counts as 500. ``done`` runs however the request ended, and the exception still propagates.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send


async def serve_observed(
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    done: Callable[[int, float], None],
    *,
    add_headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Run ``app``, adding ``add_headers`` to the response; then ``done(status, seconds)``."""
    started = time.perf_counter()
    status = 500

    async def observed(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            if add_headers:
                message["headers"] = [*message.get("headers", []), *add_headers]
        await send(message)

    try:
        await app(scope, receive, observed)
    finally:
        done(status, time.perf_counter() - started)
