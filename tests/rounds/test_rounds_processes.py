"""A round switch on two `gap serve` processes sharing one database (PostgreSQL in CI's second pass):
both serve the new round's model to new sessions at once; a session started before keeps its model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from fixtures.game import seed_images
from fixtures.processes import stop, wait_until_answers
from fixtures.server import free_port
from gap.cli import app
from gap.config import Settings, get_settings
from gap.db.engine import make_engine, make_sessionmaker, transaction
from gap.db.models import Turn

pytestmark = [pytest.mark.db, pytest.mark.slow]


@pytest.fixture
def replicas(settings: Settings, tiny_vlm_dir: Path, tmp_path: Path) -> Iterator[list[str]]:
    env = {
        **os.environ,
        "GAP_DATA_DIR": str(settings.data_dir),
        "GAP_DATABASE_URL": settings.resolved_database_url,
        "GAP_MODEL": f"transformers:{tiny_vlm_dir}",
        "GAP_MAX_NEW_TOKENS": "6",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    gap = Path(sys.executable).parent / "gap"
    started: list[tuple[subprocess.Popen[bytes], str, Path]] = []
    try:
        for i in range(2):
            port, log = free_port(), tmp_path / f"serve{i}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [str(gap), "serve", "--port", str(port), "--no-worker"], env=env, stdout=out, stderr=out
                )
            started.append((process, f"http://127.0.0.1:{port}", log))
        for process, url, log in started:
            wait_until_answers(process, f"{url}/openapi.json", log)
        yield [url for _, url, _ in started]
    finally:
        stop(*(process for process, _, _ in started))


def test_two_processes_switch_together(
    settings: Settings, replicas: list[str], tiny_vlm_dir: Path, tmp_path: Path
) -> None:
    v1 = tmp_path / "v1"
    shutil.copytree(tiny_vlm_dir, v1)
    seed_images(settings)
    env = {"GAP_DATA_DIR": str(settings.data_dir), "GAP_DATABASE_URL": settings.resolved_database_url}

    def start_round(spec: str) -> None:
        get_settings.cache_clear()
        result = CliRunner().invoke(app, ["rounds", "start", "--model", spec], env=env)
        assert result.exit_code == 0, result.output

    def start(replica: int, name: str) -> tuple[str, dict[str, str], str]:
        url = replicas[replica]
        token = httpx.post(f"{url}/api/auth/guest", json={"name": name}).json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        return url, auth, httpx.post(f"{url}/api/sessions", headers=auth).json()["round"]["round_id"]

    def answered_by(player: tuple[str, dict[str, str], str]) -> str | None:
        url, auth, round_id = player
        asked = httpx.post(
            f"{url}/api/rounds/{round_id}/questions",
            headers=auth,
            json={"question": "What is it?"},
            timeout=60,
        )
        assert asked.status_code == 201, asked.text
        turn_id = asked.json()["turn_id"]
        judged = httpx.post(f"{url}/api/turns/{turn_id}/verdict", headers=auth, json={"verdict": "correct"})
        assert judged.status_code == 200, judged.text
        engine = make_engine(settings.resolved_database_url)
        with transaction(make_sessionmaker(engine)) as db:
            turn = db.get(Turn, turn_id)
            assert turn is not None
            model = turn.model
        engine.dispose()
        return model

    own = f"transformers:{tiny_vlm_dir}"
    start_round(own)  # round 1: the replicas' own GAP_MODEL
    ada = start(0, "Ada")
    assert answered_by(ada) == own
    start_round(f"transformers:{v1}")
    assert answered_by(start(0, "Bob")) == f"transformers:{v1}"
    assert answered_by(start(1, "Cy")) == f"transformers:{v1}"
    assert answered_by(ada) == own  # started in round 1 on replica 0: finishes on round 1's model
    dee = start(1, "Dee")
    assert answered_by(dee) == f"transformers:{v1}"
