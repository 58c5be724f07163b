"""Map GAP errors to HTTP responses in one place; messages never carry pool or taint."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from typing import Any

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
    StorageError,
)
from gap.web.ratelimit import Rule
from gap.web.schemas import ErrorOut, UnprocessableOut

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
    (StorageError, 503),
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


# --- what the OpenAPI spec says about errors --------------------------------------------------

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "`Bearer`: log in (POST /api/auth/guest) and send the token.",
            "schema": {"type": "string"},
        }
    },
    429: _RETRY_AFTER,
    503: _RETRY_AFTER,
}
DESCRIPTIONS: dict[int, str] = {
    400: "The body cannot be read as its content type says (not UTF-8, say).",
    401: "No bearer token, or not a valid one.",
    404: "No such id, or not this player's.",
    409: "The request conflicts with the game's state.",
    413: "The body is larger than GAP_MAX_BODY_BYTES (GAP_MAX_UPLOAD_BYTES for uploads).",
    422: (
        "The request does not fit the schema (a list of field errors), or the app refuses it: a NUL "
        "character or a lone surrogate anywhere in the URL or the body, text over a limit (a message)."
    ),
    429: "Too many requests from this client IP or player: see Retry-After.",
    502: "The model failed to answer.",
    503: "The model is resting after failures: see Retry-After.",
    504: "The model took longer than GAP_MODEL_TIMEOUT.",
}


def error_responses(codes: Mapping[int, str | None]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: the statuses it answers besides success, each with a description
    (None: the standard one). :func:`document_errors` gives each its body and headers, and adds
    400, 401, 413, 422 and 429 where they apply: name those here only to say something specific."""
    return {status: {"description": text or DESCRIPTIONS[status]} for status, text in codes.items()}


def document_errors(app: FastAPI, rules: list[Rule]) -> None:
    """Complete the app's OpenAPI spec with what the routes' signatures cannot say: every error's
    body (the app's :class:`ErrorOut`; a 422's :class:`UnprocessableOut`, which FastAPI documents
    as its list alone) and headers, and the errors that come from outside the routes' code: the
    edge guard's 413 and 422 (every operation), FastAPI's 400 for an unreadable body, 401 where a
    bearer token is required, 429 where a rate limit applies."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            complete_spec(generate(), rules)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def complete_spec(spec: dict[str, Any], rules: list[Rule]) -> None:
    """Document, in an OpenAPI ``spec``, the error bodies and headers and the errors from outside
    the routes (see :func:`document_errors`)."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for model in (ErrorOut, UnprocessableOut):
        found = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(found.pop("$defs", {}))
        schemas[model.__name__] = found
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 body, replaced below
        schemas.pop(name, None)
    for path, operations in spec.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            if "content" in responses.get("422", {}):  # FastAPI's own, its list alone: replaced
                del responses["422"]
            wanted = [413, 422]
            if "requestBody" in operation:
                wanted.append(400)
            if operation.get("security"):
                wanted.append(401)
            if any(_limits(rule, method, path) for rule in rules):
                wanted.append(429)
            for status in wanted:
                responses.setdefault(str(status), {"description": DESCRIPTIONS[status]})
            for status, response in responses.items():
                if int(status) >= 400 and "content" not in response:
                    _app_error(int(status), response)
            operation["responses"] = dict(sorted(responses.items()))


def _app_error(status: int, response: dict[str, Any]) -> None:
    model = UnprocessableOut if status == 422 else ErrorOut
    response["content"] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}
    if status in _HEADERS:
        response["headers"] = _HEADERS[status]


def _limits(rule: Rule, method: str, path: str) -> bool:
    """Whether ``rule`` counts requests to the OpenAPI path template (``{id}`` stands for one segment)."""
    return rule.method == method.upper() and rule.path.match(re.sub(r"\{[^}/]+\}", "x", path)) is not None
