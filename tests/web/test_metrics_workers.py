"""`/metrics` under `gap serve --workers N`: one scrape adds up every worker (prometheus multiprocess
mode), and N workers share one `openai:` backend's concurrency bound."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fixtures.game import seed_images
from fixtures.models import free_port
from fixtures.scale_backend import ScaleBackend
from gap.cli.serve import _share_model_concurrency
from gap.config import Settings
from gap.web.metrics import multiprocess_metrics

pytestmark = pytest.mark.db

REQUESTS = 40


def _healthz_count(text: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gap_http_requests_total" and sample.labels.get("route") == "/healthz":
                total += sample.value
    return total


@pytest.mark.slow  # two worker processes start (~20-60 s on a busy machine)
def test_one_scrape_sums_every_worker(
    tmp_path: Path, settings: Settings, scale_backend: ScaleBackend
) -> None:
    seed_images(settings, per_pool=1)  # a migrated database
    port = free_port()
    env = {
        **os.environ,
        "GAP_DATA_DIR": str(settings.data_dir),
        "GAP_DATABASE_URL": settings.resolved_database_url,
        "GAP_MODEL": "openai:m",
        "GAP_OPENAI_BASE_URL": scale_backend.base_url,
        "GAP_CONFIG": "",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "counter_1.db").write_bytes(b"stale")  # a crashed run's: cleaned at start
    code = "import sys; from gap.cli import app; sys.argv[0] = 'gap'; app()"
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-c", code, "serve", "--workers", "2", "--port", str(port), "--no-worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        answered = 0
        metrics_dir = tmp_path / "metrics"
        # Each request on a new connection, so the kernel spreads them; go on until both workers
        # answered some (the second may start listening later than the first).
        while answered < REQUESTS or len(list(metrics_dir.glob("counter_*.db"))) < 2:
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"not both workers answered: {answered} requests"
            try:
                answered += httpx.get(f"{url}/healthz", timeout=10).status_code == 200
            except httpx.TransportError:
                assert answered == 0, log.read_text()[-3000:]
                time.sleep(0.2)  # polling the state "listening" under a deadline
        assert not (metrics_dir / "counter_1.db").exists()
        scrapes = [httpx.get(f"{url}/metrics", timeout=10) for _ in range(8)]
        for scrape in scrapes:
            assert scrape.status_code == 200
            assert _healthz_count(scrape.text) == answered, scrape.text
            gauges = {
                sample.name: sample
                for family in text_string_to_metric_families(scrape.text)
                for sample in family.samples
                if sample.name in ("gap_model_circuit_state", "gap_model_in_flight", "gap_active_sessions")
            }
            assert {name: g.value for name, g in gauges.items()} == {  # one value each, not one per worker
                "gap_model_circuit_state": 0,
                "gap_model_in_flight": 0,
                "gap_active_sessions": 0,
            }, scrape.text
            assert all("pid" not in g.labels for g in gauges.values()), scrape.text
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert "Traceback" not in log.read_text()


def test_a_fresh_metrics_folder_per_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with multiprocess_metrics() as folder:
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(folder) and folder.is_dir()
        assert not list(folder.iterdir())
    assert not folder.exists() and "PROMETHEUS_MULTIPROC_DIR" not in os.environ


def test_workers_share_an_openai_backends_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GAP_MODEL_CONCURRENCY", raising=False)
    _share_model_concurrency(Settings(model="openai:m"), 4)
    assert os.environ["GAP_MODEL_CONCURRENCY"] == "4"  # 16 in all

    monkeypatch.delenv("GAP_MODEL_CONCURRENCY")
    _share_model_concurrency(Settings(model="transformers:/m"), 4)
    assert "GAP_MODEL_CONCURRENCY" not in os.environ  # one model per worker: its own bound

    monkeypatch.setenv("GAP_MODEL_CONCURRENCY", "6")
    _share_model_concurrency(Settings(model="openai:m"), 4)
    assert os.environ["GAP_MODEL_CONCURRENCY"] == "6"  # the user's number stands
