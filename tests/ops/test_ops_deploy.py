"""The production layout in deploy/: every part that can run here is checked.

No Docker engine runs here, so the compose file is read as data: each `gap ...` command it runs must
parse with the real CLI, each GAP_ variable must be a real setting, and the services it points at
must exist. nginx itself runs with deploy/nginx.conf (ports rewritten) in front of two `gap serve`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
import typer.main
import yaml

from fixtures.game import seed_images
from fixtures.scale_backend import ScaleBackend
from fixtures.server import free_port
from gap.cli import app
from gap.config import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def gap_services() -> dict[str, dict[str, Any]]:
    """The services that run the GAP image (built from deploy/Dockerfile)."""
    services = compose()["services"]
    return {
        name: s for name, s in services.items() if s.get("build", {}).get("dockerfile") == "deploy/Dockerfile"
    }


def parse_gap(args: list[str]) -> Any:
    """Parse ``gap ARGS`` with the real CLI (its click context), without running it: sub-commands by
    name, then the leaf command's options and values, validated as a run would."""
    command: Any = typer.main.get_command(app)
    path, rest = ["gap"], list(args)
    while hasattr(command, "commands"):  # a group: the next word names a sub-command
        assert rest and rest[0] in command.commands, (args, sorted(command.commands))
        path.append(rest[0])
        command = command.commands[rest.pop(0)]
    return command.make_context(" ".join(path), rest)


def test_the_image_runs_gap_and_has_the_storage_and_redis_extras() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["gap"]' in dockerfile
    extras = re.search(r"'\.\[([a-z0-9,]+)\]'", dockerfile)
    assert extras is not None
    pyproject = (DEPLOY.parent / "pyproject.toml").read_text()
    for extra in extras.group(1).split(","):
        assert re.search(rf"^{extra} = \[", pyproject, re.MULTILINE), extra
    for copied in re.findall(r"^COPY (.+) \S+$", dockerfile, re.MULTILINE):
        for path in copied.split():
            assert (DEPLOY.parent / path).exists(), path


def test_every_gap_command_in_the_compose_file_parses_with_the_cli() -> None:
    services = gap_services()
    assert {"migrate", "gap", "worker"} <= services.keys()
    commands = {name: s["command"] for name, s in services.items()}
    assert commands["migrate"] == ["db", "upgrade"]
    paths = {name: parse_gap(args).command_path for name, args in commands.items()}
    assert paths == {"migrate": "gap db upgrade", "gap": "gap serve", "worker": "gap worker"}
    serve = parse_gap(commands["gap"]).params
    assert serve["workers"] >= 2 and serve["worker"] is False  # the worker runs once, on its own
    with pytest.raises(Exception, match="No such option"):
        parse_gap(["serve", "--no-such-option"])  # the check can fail
    with pytest.raises(Exception, match="greater than or equal to 1"):
        parse_gap(["serve", "--workers", "0"])


def test_every_gap_variable_in_the_compose_file_is_a_setting() -> None:
    envs = [s.get("environment", {}) for s in gap_services().values()]
    names = {key for env in envs for key in env if key.startswith("GAP_")}
    assert len(names) >= 8
    unknown = sorted(n for n in names if n.removeprefix("GAP_").lower() not in Settings.model_fields)
    assert not unknown, unknown
    values = {key: value for env in envs for key, value in env.items()}
    Settings(
        **{
            k.removeprefix("GAP_").lower(): v
            for k, v in values.items()
            if k.startswith("GAP_") and "$" not in v
        }
    )


def test_the_compose_file_points_at_its_own_services() -> None:
    document = compose()
    services = document["services"]
    env = services["gap"]["environment"]
    for variable in ("GAP_DATABASE_URL", "GAP_REDIS_URL", "GAP_S3_ENDPOINT_URL", "GAP_OPENAI_BASE_URL"):
        host = urlparse(env[variable]).hostname
        assert host in services, (variable, host)
    assert "--enable-lora" in services["vllm"]["command"]
    assert env["GAP_MODEL"].startswith("openai:") and env["GAP_STORAGE_URL"].startswith("s3://")
    assert services["gap"]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    upstream = re.search(
        r"upstream gap \{\s*(?:#.*\n\s*)*server (\S+):(\d+)", (DEPLOY / "nginx.conf").read_text()
    )
    assert upstream is not None
    serve = parse_gap(services["gap"]["command"]).params
    assert upstream.group(1) == "gap" and int(upstream.group(2)) == serve["port"]
    for name in set(services["nginx"].get("depends_on", {})) | set(services["gap"]["depends_on"]):
        assert name in services, name
    for volume in (v for s in services.values() for v in s.get("volumes", []) if not v.startswith(".")):
        assert volume.split(":")[0] in document["volumes"], volume


def _gap_serve(port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    code = "import sys; from gap.cli import app; sys.argv[0] = 'gap'; app()"
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-c", code, "serve", "--port", str(port), "--no-worker"],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )


def _wait(url: str, processes: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
    deadline = time.monotonic() + 120
    with httpx.Client(timeout=10) as http:
        while True:  # the state "answering", polled
            for process, log in zip(processes, logs, strict=True):
                assert process.poll() is None, log.read_text()
            try:
                if http.get(url).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{url} did not answer: " + " | ".join(
                p.read_text() for p in logs
            )
            time.sleep(0.2)


@pytest.mark.db
@pytest.mark.slow
@pytest.mark.skipif(not Path(NGINX).exists(), reason="needs Debian's nginx-light (scripts/test installs it)")
def test_a_question_played_through_nginx_in_front_of_two_replicas(
    tmp_path: Path, settings: Settings, scale_backend: ScaleBackend
) -> None:
    seed_images(settings, per_pool=2)  # migrated once, as the release step would
    env = {
        "GAP_DATA_DIR": str(settings.data_dir),
        "GAP_DATABASE_URL": settings.resolved_database_url,
        "GAP_MODEL": "openai:m",
        "GAP_OPENAI_BASE_URL": scale_backend.base_url,
        "GAP_LOG_FORMAT": "json",  # as in the compose file; the request ids are in the lines
        "GAP_CONFIG": "",
    }
    ports = [free_port(), free_port()]
    logs = [tmp_path / f"gap{i}.log" for i in range(2)]
    replicas = [_gap_serve(port, env, log) for port, log in zip(ports, logs, strict=True)]
    proxy_port = free_port()
    conf = (DEPLOY / "nginx.conf").read_text()
    servers = "".join(f"server 127.0.0.1:{port};\n" for port in ports)
    conf = re.sub(r"server gap:8000[^;]*;", servers, conf)
    conf = conf.replace("listen 80;", f"listen 127.0.0.1:{proxy_port};")
    conf = conf.replace("worker_processes auto;", "worker_processes 1;")
    (tmp_path / "nginx.conf").write_text(conf)
    nginx_log = tmp_path / "nginx.log"
    nginx = None
    try:
        for port in ports:
            _wait(f"http://127.0.0.1:{port}/healthz", replicas, logs)
        with nginx_log.open("wb") as sink:
            nginx = subprocess.Popen(
                [
                    NGINX,
                    "-p",
                    str(tmp_path),
                    "-c",
                    str(tmp_path / "nginx.conf"),
                    "-g",
                    f"daemon off; pid {tmp_path}/nginx.pid;",
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        base = f"http://127.0.0.1:{proxy_port}"
        _wait(f"{base}/healthz", [nginx, *replicas], [nginx_log, *logs])
        with httpx.Client(base_url=base, timeout=30) as http:
            login = http.post("/api/auth/guest", json={"name": "Ada"})
            assert login.status_code == 200, login.text
            auth = {"Authorization": f"Bearer {login.json()['token']}"}
            round_ = http.post("/api/sessions", headers=auth).json()["round"]
            assert http.get(round_["image_url"], headers=auth).headers["content-type"] == "image/png"
            asked = http.post(
                f"/api/rounds/{round_['round_id']}/questions", headers=auth, json={"question": "Q?"}
            )
            assert asked.status_code == 201 and asked.json()["answer"] == "yes", asked.text
            verdict = http.post(
                f"/api/turns/{asked.json()['turn_id']}/verdict", headers=auth, json={"verdict": "correct"}
            )
            assert verdict.status_code == 200, verdict.text
            traced = verdict.headers["x-request-id"]
            assert re.fullmatch(r"[0-9a-f]{32}", traced)  # nginx's $request_id, passed on and echoed
            for _ in range(6):
                assert http.get("/api/me", headers=auth).status_code == 200
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(timeout=30)
        for process in replicas:
            process.terminate()
            process.wait(timeout=60)
    served = [log.read_text() for log in logs]
    assert all("GET /api/me 200" in text for text in served), served  # both replicas took requests
    assert sum(traced in text for text in served) == 1  # the proxy's id is in the replica's log
    assert traced in nginx_log.read_text()  # and in nginx's own JSON access log
