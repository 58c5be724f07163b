"""Probes for a load balancer and an orchestrator, and Prometheus metrics.

``/healthz``: the process answers (liveness; it checks nothing else, so a slow database never gets
a healthy replica restarted). ``/readyz``: the database answers a query and the model's circuit is
not open, and an ``openai:`` backend answers ``GET /models`` (readiness: take the replica out of
rotation, not kill it). ``/metrics``: Prometheus text format (see :mod:`gap.web.metrics`).
"""

from __future__ import annotations

from typing import Any, Literal

import anyio.to_thread
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

from gap.models.gate import CircuitState
from gap.web.deps import Context
from gap.web.metrics import render

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process is up and its event loop answers."""
    return {"status": "ok"}


def _database_ok(ctx: Any) -> str:
    try:
        with ctx.factory() as db:
            db.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means "not ready"; the reason goes to the probe's reader
        return f"error: {type(exc).__name__}"
    return "ok"


def _model_ok(ctx: Any) -> str:
    if ctx.gate.breaker.state is CircuitState.OPEN:
        return "circuit open"
    ping = getattr(ctx.gate.model(), "ping", None)
    if ping is None:
        return "ok"
    try:
        ping()
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    return "ok"


class ReadyOut(BaseModel):
    status: Literal["ready", "not ready"]
    database: str = Field(description="`ok`, or why the database did not answer.")
    model: str = Field(description="`ok`, `circuit open`, or why the model did not answer.")


@router.get(
    "/readyz",
    response_model=ReadyOut,
    responses={503: {"model": ReadyOut, "description": "The database or the model is not reachable."}},
)
async def readyz(ctx: Context) -> JSONResponse:
    """Readiness: the database answers, and the model is reachable with its circuit closed."""
    database = await anyio.to_thread.run_sync(_database_ok, ctx)
    model = await anyio.to_thread.run_sync(_model_ok, ctx)
    ready = database == "ok" and model == "ok"
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "database": database, "model": model},
        status_code=200 if ready else 503,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Metrics."}},
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics of this process."""
    body, content_type = render(request.app.state.metrics, request.app.state.context)
    return Response(body, media_type=content_type)
