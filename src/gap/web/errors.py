"""Map GAP errors to HTTP responses in one place; messages never carry pool or taint."""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from gap.errors import (
    AuthError,
    ConfigError,
    Conflict,
    GapError,
    InputError,
    ModelError,
    ModelTimeout,
    ModelUnavailable,
    NotFound,
)

log = logging.getLogger(__name__)

STATUS_BY_ERROR: list[tuple[type[GapError], int]] = [
    (InputError, 422),
    (NotFound, 404),
    (Conflict, 409),
    (AuthError, 401),
    (ModelTimeout, 504),
    (ModelUnavailable, 503),
    (ModelError, 502),
    (ConfigError, 500),
]


def status_for(error: GapError) -> int:
    return next((status for kind, status in STATUS_BY_ERROR if isinstance(error, kind)), 500)


async def _handle_gap_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GapError)
    status = status_for(exc)
    if status >= 500:
        log.warning("request failed: %r", exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if isinstance(exc, ModelUnavailable):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    return JSONResponse({"detail": exc.message}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(GapError, _handle_gap_error)
