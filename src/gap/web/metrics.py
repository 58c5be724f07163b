"""Prometheus metrics of one server process: requests, latencies, the model, its circuit, sessions.

Each app has its own registry (several apps in one test process never collide). With
``gap serve --workers N`` every worker process reports its own numbers; scrape each replica.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gap.db.models import GameSession
from gap.models.gate import CircuitState

_CIRCUIT_VALUE = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gap_http_requests",
            "HTTP requests answered.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gap_http_request_seconds",
            "Time to answer an HTTP request.",
            ["method", "route"],
            registry=self.registry,
        )
        self.model_latency = Histogram(
            "gap_model_answer_seconds",
            "Time the model took per answer (failed ones included).",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.model_errors = Counter(
            "gap_model_errors", "Model answers that failed, by kind.", ["kind"], registry=self.registry
        )
        self.circuit = Gauge(
            "gap_model_circuit_state",
            "The model's circuit: 0 closed, 1 half-open, 2 open.",
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "gap_model_in_flight", "Model answers being awaited now.", registry=self.registry
        )
        self.active_sessions = Gauge(
            "gap_active_sessions",
            "Game sessions being played (all replicas: read from the database).",
            registry=self.registry,
        )

    def model_answered(self, seconds: float, error: str | None) -> None:
        if error != "circuit_open":  # not called at all: no latency to record
            self.model_latency.observe(seconds)
        if error is not None:
            self.model_errors.labels(error).inc()


def render(metrics: Metrics, ctx: Any) -> tuple[bytes, str]:
    """The metrics text; gauges read at scrape time."""
    metrics.circuit.set(_CIRCUIT_VALUE[ctx.gate.breaker.state])
    metrics.in_flight.set(ctx.gate.in_flight)
    with ctx.factory() as db:
        metrics.active_sessions.set(
            db.scalar(select(func.count()).select_from(GameSession).where(GameSession.status == "active"))
            or 0
        )
    return generate_latest(metrics.registry), CONTENT_TYPE_LATEST


class RequestMetrics:
    """Count and time every HTTP request by route template (never the raw path: ids would explode)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(scope["method"], route).observe(time.perf_counter() - started)
