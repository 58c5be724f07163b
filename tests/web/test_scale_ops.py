"""Operations: /healthz, /readyz, Prometheus /metrics, and `gap serve --workers N` on a current schema."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from fixtures.game import login, seed_images
from fixtures.models import free_port
from fixtures.scale_backend import ScaleBackend
from gap.config import Settings
from gap.db.engine import make_engine, make_sessionmaker
from gap.errors import ConfigError
from gap.models.gate import CircuitState
from gap.models.openai_backend import OpenAIModel
from gap.web.app import create_app

pytestmark = pytest.mark.db


@pytest.fixture
def client(settings: Settings, scale_backend: ScaleBackend) -> Any:
    seed_images(settings, per_pool=2)
    model = OpenAIModel("m", base_url=scale_backend.base_url, api_key="EMPTY", timeout=10, max_new_tokens=8)
    app = create_app(settings, model=model, rng=random.Random(8))
    with TestClient(app) as client:
        yield client


def test_health_and_readiness(client: TestClient, scale_backend: ScaleBackend) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "database": "ok", "model": "ok"}
    scale_backend.stop()  # the model server goes away: not ready, still alive
    gone = client.get("/readyz")
    assert gone.status_code == 503 and gone.json()["model"].startswith("error")
    assert client.get("/healthz").status_code == 200


def test_readiness_follows_the_circuit_and_the_database(client: TestClient) -> None:
    ctx = client.app.state.context  # type: ignore[attr-defined]
    ctx.gate.breaker.state = CircuitState.OPEN
    ctx.gate.breaker.opened_at = time.monotonic()
    assert client.get("/readyz").json()["model"] == "circuit open"
    ctx.gate.breaker.state = CircuitState.CLOSED
    ctx.factory = make_sessionmaker(make_engine(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none"))
    down = client.get("/readyz")
    assert down.status_code == 503 and down.json()["database"].startswith("error")


def test_metrics_count_requests_model_answers_and_sessions(client: TestClient) -> None:
    auth = login(client)
    round_id = client.post("/api/sessions", headers=auth).json()["round"]["round_id"]
    assert (
        client.post(f"/api/rounds/{round_id}/questions", headers=auth, json={"question": "Q?"}).status_code
        == 201
    )
    text = client.get("/metrics").text
    assert (
        'gap_http_requests_total{method="POST",route="/api/rounds/{round_id}/questions",status="201"} 1.0'
        in text
    )
    assert 'gap_http_request_seconds_count{method="POST",route="/api/sessions"} 1.0' in text
    assert "gap_model_answer_seconds_count 1.0" in text
    assert "gap_model_circuit_state 0.0" in text
    assert "gap_active_sessions 1.0" in text


def test_an_old_schema_is_refused_where_replicas_share_it(tmp_path: Path) -> None:
    empty = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'old.sqlite3'}")
    with pytest.raises(ConfigError, match="gap db upgrade"):
        create_app(empty, model=lambda: None, upgrade_schema=False)  # type: ignore[arg-type,return-value]


def _gap(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    code = "import sys; from gap.cli import app; sys.argv[0] = 'gap'; app()"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_gap_serve_workers(tmp_path: Path, settings: Settings, scale_backend: ScaleBackend) -> None:
    env = {
        "GAP_DATA_DIR": str(tmp_path / "old-data"),
        "GAP_DATABASE_URL": f"sqlite:///{tmp_path / 'old.sqlite3'}",
        "GAP_MODEL": "openai:m",
        "GAP_OPENAI_BASE_URL": scale_backend.base_url,
        "GAP_CONFIG": "",
    }
    port = free_port()
    refused = _gap("serve", "--workers", "2", "--port", str(port), "--no-worker", env=env)
    output, _ = refused.communicate(timeout=120)
    assert refused.returncode != 0, output
    assert b"gap db upgrade" in b" ".join(output.split()), output  # Rich may wrap the line anywhere

    seed_images(settings, per_pool=2)  # a migrated database with images
    env |= {"GAP_DATA_DIR": str(settings.data_dir), "GAP_DATABASE_URL": settings.resolved_database_url}
    server = _gap("serve", "--workers", "2", "--port", str(port), "--no-worker", env=env)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            deadline = time.monotonic() + 120
            while True:  # wait for the state "listening", polling the port the servers bind
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "gap serve --workers 2 did not start"
                    time.sleep(0.2)
            token = http.post("/api/auth/guest", json={"name": "Ada"}).json()["token"]
            auth = {"Authorization": f"Bearer {token}"}
            round_id = http.post("/api/sessions", headers=auth).json()["round"]["round_id"]
            asked = http.post(f"/api/rounds/{round_id}/questions", headers=auth, json={"question": "Q?"})
            assert asked.status_code == 201 and asked.json()["answer"] == "yes"
    finally:
        server.terminate()
        server.wait(timeout=60)
