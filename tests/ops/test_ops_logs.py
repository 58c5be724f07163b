"""GAP_LOG_FORMAT=json: `gap serve` writes nothing on stderr but JSON objects, one per line."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from fixtures.game import seed_images
from fixtures.scale_backend import ScaleBackend
from fixtures.server import free_port
from gap.config import Settings
from gap.logs import JSONFormatter, request_id
from gap.web.app import create_app

pytestmark = pytest.mark.db


def gap_serve(*args: str, env: dict[str, str], stderr: Path) -> subprocess.Popen[bytes]:
    code = "import sys; from gap.cli import app; sys.argv[0] = 'gap'; app()"
    with stderr.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-c", code, "serve", *args],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )


def wait_healthy(http: httpx.Client, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while True:  # the state "listening", polled
        assert server.poll() is None, log.read_text()
        try:
            if http.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "gap serve did not start: " + log.read_text()
        time.sleep(0.2)


def test_gap_serve_logs_json_lines_with_request_fields(
    tmp_path: Path, settings: Settings, scale_backend: ScaleBackend
) -> None:
    seed_images(settings, per_pool=2)
    env = {
        "GAP_DATA_DIR": str(settings.data_dir),
        "GAP_DATABASE_URL": settings.resolved_database_url,
        "GAP_MODEL": "openai:m",
        "GAP_OPENAI_BASE_URL": scale_backend.base_url,
        "GAP_LOG_FORMAT": "json",
        "GAP_CONFIG": "",
    }
    port, log = free_port(), tmp_path / "stderr.log"
    server = gap_serve("--workers", "2", "--port", str(port), env=env, stderr=log)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            wait_healthy(http, server, log)
            traced = http.post("/api/auth/guest", json={"name": "Ada"}, headers={"X-Request-ID": "trace-42"})
            assert traced.headers["x-request-id"] == "trace-42"  # a proxy's id comes back
            auth = {"Authorization": f"Bearer {traced.json()['token']}"}
            started = http.post("/api/sessions", headers=auth)
            made = started.headers["x-request-id"]
            assert len(made) == 32 and made != "trace-42"  # none sent: one is made
            round_id = started.json()["round"]["round_id"]
            asked = http.post(f"/api/rounds/{round_id}/questions", headers=auth, json={"question": "Q?"})
            assert asked.status_code == 201, asked.text
            assert http.get("/api/no-such-route").status_code == 404
            odd = http.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
            assert odd.headers["x-request-id"] != "bad id\twith spaces"
            expected = 5 + 1  # the requests above, and the healthz that found the server up
    finally:
        server.terminate()
        server.wait(timeout=60)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    entries = []
    for line in lines:
        entry = json.loads(line)  # every stderr line is one JSON object
        assert {"time", "level", "logger", "message"} <= entry.keys(), line
        entries.append(entry)
    access = [e for e in entries if e["logger"] == "gap.access"]
    assert len(access) >= expected
    by_id = {e["request_id"]: e for e in access}
    guest = by_id["trace-42"]
    assert (guest["method"], guest["path"], guest["status"], guest["level"]) == (
        "POST",
        "/api/auth/guest",
        200,
        "INFO",
    )
    assert by_id[made]["path"] == "/api/sessions" and by_id[made]["status"] == 201
    assert all(isinstance(e["duration_ms"], float) and e["duration_ms"] >= 0 for e in access)
    assert any(e["path"] == "/api/no-such-route" and e["status"] == 404 for e in access)
    loggers = {e["logger"] for e in entries}
    assert "gap.cli.serve" in loggers and any(name.startswith("uvicorn") for name in loggers), loggers


def test_every_line_logged_during_a_request_carries_its_id(settings: Settings) -> None:
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(JSONFormatter().format(record))

    handler = Keep(level=logging.INFO)
    access = logging.getLogger("gap.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        with TestClient(create_app(settings, model=lambda: None)) as client:  # type: ignore[arg-type,return-value]
            response = client.get("/healthz", headers={"X-Request-ID": "abc-1"})
    finally:
        access.removeHandler(handler)
        access.setLevel(logging.NOTSET)
    assert response.headers["x-request-id"] == "abc-1"
    entry = json.loads(seen[-1])
    assert entry["request_id"] == "abc-1" and entry["path"] == "/healthz" and entry["status"] == 200
    assert request_id.get() is None  # the id does not leak past its request
