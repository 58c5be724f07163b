"""Prometheus metrics of a server: requests, latencies, the model, its circuit, sessions.

Each app has its own registry (several apps in one test process never collide). Under
``gap serve --workers N`` prometheus_client's multiprocess mode is on (``PROMETHEUS_MULTIPROC_DIR``,
set by :func:`multiprocess_dir`): every worker writes its numbers to files there and one scrape, on
whichever worker answers it, adds them all up. Gauges say how: models awaited now are summed over
live workers, the circuit is the worst live worker's, active sessions (read from the database) the
latest reading.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from sqlalchemy import func, select
from starlette.types import ASGIApp, Receive, Scope, Send

from gap.db.models import GameSession
from gap.models.gate import CircuitState, ModelGate
from gap.web._observe import serve_observed

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
            "The model's circuit: 0 closed, 1 half-open, 2 open (the worst worker's).",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.in_flight = Gauge(
            "gap_model_in_flight",
            "Model answers being awaited now.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.active_sessions = Gauge(
            "gap_active_sessions",
            "Game sessions being played (all replicas: read from the database).",
            registry=self.registry,
            multiprocess_mode="livemostrecent",
        )
        self._gate: ModelGate | None = None

    def watch(self, gate: ModelGate) -> None:
        """Report this gate's circuit and answers in flight (sampled after every request, so each
        worker's own numbers stay fresh for a scrape answered by another)."""
        self._gate = gate

    def sample(self) -> None:
        if self._gate is not None:
            self.circuit.set(_CIRCUIT_VALUE[self._gate.breaker.state])
            self.in_flight.set(self._gate.in_flight)

    def process_exited(self) -> None:
        """Drop this process's live gauges from the shared files (multiprocess mode), on shutdown."""
        if multiprocess_on():
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    def model_answered(self, seconds: float, error: str | None) -> None:
        if error != "circuit_open":  # not called at all: no latency to record
            self.model_latency.observe(seconds)
        if error is not None:
            self.model_errors.labels(error).inc()


def multiprocess_on() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


@contextmanager
def multiprocess_metrics() -> Iterator[Path]:
    """Multiprocess mode for the worker processes started inside: ``PROMETHEUS_MULTIPROC_DIR`` as
    set (its old files removed first, as the client requires) or a fresh temporary folder, removed
    at the end. Enter it before the workers import prometheus_client (it picks its storage then)."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
        yield folder
        return
    folder = Path(tempfile.mkdtemp(prefix="gap-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    try:
        yield folder
    finally:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        shutil.rmtree(folder, ignore_errors=True)


def render(metrics: Metrics, ctx: Any) -> tuple[bytes, str]:
    """The metrics text (every worker's, in multiprocess mode); gauges read at scrape time."""
    metrics.sample()
    with ctx.factory() as db:
        metrics.active_sessions.set(
            db.scalar(select(func.count()).select_from(GameSession).where(GameSession.status == "active"))
            or 0
        )
    if not multiprocess_on():
        return generate_latest(metrics.registry), CONTENT_TYPE_LATEST
    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
    return generate_latest(combined), CONTENT_TYPE_LATEST


class RequestMetrics:
    """Count and time every HTTP request by route template (never the raw path: ids would explode)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        def done(status: int, seconds: float) -> None:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(scope["method"], route).observe(seconds)
            self.metrics.sample()

        await serve_observed(self.app, scope, receive, send, done)
