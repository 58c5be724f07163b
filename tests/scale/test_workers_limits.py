"""The sign-up limit holds across `gap serve --workers 2` when the workers share a redis-server.

Sign-ups go out on connections the test knows each worker holds (read from /proc), so both workers
count them; with a count in each process the two would let twice the limit through.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from fixtures.load import Served, gap_serve, serve_env, wait_until
from fixtures.scale_backend import ScaleBackend
from gap.config import Settings

pytestmark = [pytest.mark.db, pytest.mark.slow]

LIMIT = 4
PER_WORKER = 3  # 2 x 3 sign-ups: 6 with a count per process, 4 with one shared count


def sign_up(connection: socket.socket) -> int:
    """One guest sign-up over a kept-alive connection; the response's status."""
    body = json.dumps({"name": "p"}).encode()
    connection.sendall(
        b"POST /api/auth/guest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    reply = connection.makefile("rb")
    status = int(reply.readline().split()[1])
    length = 0
    while (line := reply.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    reply.read(length)
    return status


def connections_on_each_worker(served: Served) -> list[list[socket.socket]]:
    """Open connections until each worker has accepted ``PER_WORKER`` of them."""
    opened: list[socket.socket] = []
    port = int(served.url.rsplit(":", 1)[1])
    while True:
        opened.append(socket.create_connection(("127.0.0.1", port), timeout=30))
        ports = {s.getsockname()[1]: s for s in opened}
        assert wait_until(lambda: sum(map(len, served.connections().values())) >= len(opened), 30)
        held = [[ports[p] for p in sorted(mine) if p in ports] for mine in served.connections().values()]
        if all(len(mine) >= PER_WORKER for mine in held):
            return [mine[:PER_WORKER] for mine in held]
        assert len(opened) < 200, "the kernel gave every connection to one worker"


def test_two_workers_share_the_sign_up_limit(
    settings: Settings, scale_backend: ScaleBackend, redis_url: str, tmp_path: Path
) -> None:
    env = serve_env(
        settings.resolved_database_url,
        settings.data_dir,
        scale_backend.base_url,
        GAP_REDIS_URL=redis_url,
        GAP_RATE_SIGNUPS=f"{LIMIT}/minute",
    )
    with gap_serve(2, env, tmp_path / "serve.log") as served:
        one, two = connections_on_each_worker(served)
        statuses = [sign_up(connection) for pair in zip(one, two, strict=True) for connection in pair]
        for connection in one + two:
            connection.close()
    assert statuses == [200] * LIMIT + [429] * (2 * PER_WORKER - LIMIT)
