"""The game's hot path (ask + verdict) against a bare FastAPI endpoint that runs one SQLAlchemy query.

Both run in their own uvicorn process with the same settings, on the same database, the game with
an instant in-process model. A raw-socket asyncio client (HTTP/1.1 keep-alive; httpx saturates
first at 20+ clients) drives each at concurrency 1, 20 and 200 for a fixed number of requests and
prints requests/s, p50 and p99, and the game/bare ratios.

    python benchmarks/bench_web.py                          # SQLite in a temporary folder
    python benchmarks/bench_web.py --database-url postgresql+psycopg://...   # an empty database
    python benchmarks/bench_web.py --concurrency 100 --think 1 --requests 3000   # players who think

With ``--think S`` each client pauses a random 0.5 S to 1.5 S before every request, as players
reading an answer do: the latencies then show the server under a steady load rather than saturated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()


class InstantModel:
    name = "instant"

    def answer(self, image: Any, messages: Any, system: str | None = None) -> str:
        return "yes"


def serve(kind: str, port: int, database_url: str, data_dir: str) -> None:
    """Run one app (``game`` or ``bare``) under uvicorn on 127.0.0.1:port; say so on stdout once its
    socket listens (connections made from then on wait in its backlog until uvicorn accepts them)."""
    import uvicorn
    from fastapi import FastAPI
    from sqlalchemy import select

    from gap.config import Settings
    from gap.db.engine import make_engine, make_sessionmaker, reading
    from gap.db.models import Player
    from gap.web.app import create_app

    settings = Settings(
        data_dir=Path(data_dir),
        database_url=database_url,
        round_seconds=100000,
        worker=False,
        rate_signups="1000000/minute",  # the benchmark measures the hot path, not the limits
        rate_questions="1000000/minute",
    )
    if kind == "game":
        app = create_app(settings, model=InstantModel())
    else:
        factory = make_sessionmaker(make_engine(database_url))
        app = FastAPI()

        @app.get("/bare")
        def bare() -> dict[str, Any]:
            with reading(factory) as db:
                player = db.scalars(select(Player).limit(1)).first()
                return {"name": player.name if player else None}

    # Every worker process binds the port itself (SO_REUSEPORT: the kernel spreads the connections),
    # with the TCP protocol so asyncio turns Nagle off, as `gap serve --workers` does.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(2048)
    print("listening", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[listener])


def seed(database_url: str, data_dir: Path) -> None:
    import io

    from PIL import Image as PILImage

    from gap.db.engine import make_engine, make_sessionmaker, transaction
    from gap.db.migrate import upgrade
    from gap.game import Pool
    from gap.services.images import add_image
    from gap.storage import LocalStore

    upgrade(database_url)
    factory = make_sessionmaker(make_engine(database_url))
    rng = random.Random(0)
    for i in range(20):
        buffer = io.BytesIO()
        PILImage.new("RGB", (320, 240), tuple(rng.randrange(256) for _ in range(3))).save(buffer, "JPEG")
        with transaction(factory) as db:
            add_image(
                db,
                images=LocalStore(data_dir / "images"),
                data=buffer.getvalue(),
                original_name=f"{i}.jpg",
                pool=Pool.TAINTED if i % 2 else Pool.UNTAINTED,
                now=datetime.now(UTC),
            )


class Connection:
    """One keep-alive HTTP/1.1 connection; requests return (status, parsed JSON or None)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        data = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(data)}\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        if token:
            head += f"Authorization: Bearer {token}\r\n"
        self.writer.write(head.encode() + b"\r\n" + data)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        payload = await self.reader.readexactly(length)
        return status, json.loads(payload) if payload else None


async def run_level(
    kind: str, port: int, clients: int, total: int, think: float = 0.0
) -> tuple[float, list[float], int]:
    """(requests/s, latencies, non-2xx) over ``total`` requests shared by ``clients`` clients."""
    latencies: list[float] = []
    errors = 0
    remaining = total

    async def timed(conn: Connection, *args: Any, **kwargs: Any) -> tuple[int, Any]:
        nonlocal errors
        if think:
            await asyncio.sleep(think * random.uniform(0.5, 1.5))  # a player reading the answer
        started = time.perf_counter()
        status, body = await conn.request(*args, **kwargs)
        latencies.append(time.perf_counter() - started)
        errors += status >= 300
        return status, body

    async def join(i: int) -> tuple[Connection, str | None, Any]:
        """A client's connection, and for the game its guest token and first round: set up before the
        clock starts, so the level times requests on the hot path, not 200 sign-ups."""
        conn = await Connection.open(port)
        if kind == "bare":
            return conn, None, None
        _, login = await conn.request("POST", "/api/auth/guest", {"name": f"bench{i}"})
        _, started = await conn.request("POST", "/api/sessions", token=login["token"])
        return conn, login["token"], started["round"]

    async def player(conn: Connection, token: str | None, current: Any) -> None:
        nonlocal remaining
        if kind == "bare":
            while remaining > 0:
                remaining -= 1
                await timed(conn, "GET", "/bare")
            conn.writer.close()
            return
        while remaining > 0:
            remaining -= 2
            status, asked = await timed(
                conn,
                "POST",
                f"/api/rounds/{current['round_id']}/questions",
                {"question": "Is it red?"},
                token,
            )
            if status != 201:
                raise RuntimeError(f"ask answered {status}: {asked}")
            verdict = "wrong" if random.random() < 0.3 else "correct"
            _, judged = await timed(
                conn, "POST", f"/api/turns/{asked['turn_id']}/verdict", {"verdict": verdict}, token
            )
            if judged["next_round"] is not None:
                current = judged["next_round"]
            elif judged["session_status"] == "finished":
                _, again = await conn.request("POST", "/api/sessions", token=token)
                current = again["round"]
        conn.writer.close()

    joined = await asyncio.gather(*(join(i) for i in range(clients)))
    started = time.perf_counter()
    await asyncio.gather(*(player(*client) for client in joined))
    elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, latencies, errors


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(
    kind: str, database_url: str, data_dir: Path, workers: int
) -> tuple[list[subprocess.Popen[bytes]], int]:
    """``workers`` server processes of ``kind`` on one port, once each of them listens."""
    port = free_port()
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE),
                "--serve",
                kind,
                "--port",
                str(port),
                "--database-url",
                database_url,
                "--data-dir",
                str(data_dir),
            ],
            env={**os.environ, "GAP_LOG_LEVEL": "WARNING"},
            stdout=subprocess.PIPE,
        )
        for _ in range(workers)
    ]
    for process in processes:
        assert process.stdout is not None
        if process.stdout.readline().strip() != b"listening":  # blocks until it listens or exits
            stop(processes)
            raise RuntimeError(f"the {kind} server did not start")
    return processes, port


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait()


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url")
    parser.add_argument("--data-dir")
    parser.add_argument("--concurrency", default="1,20,200")
    parser.add_argument(
        "--requests",
        type=int,
        default=1200,
        help="requests per level and app; at least 30 per client, so each is measured past its first",
    )
    parser.add_argument("--workers", type=int, default=1, help="server processes of each app")
    parser.add_argument(
        "--think", type=float, default=0.0, help="seconds each client thinks between requests (mean)"
    )
    parser.add_argument("--serve", choices=["game", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.database_url, args.data_dir)
        return
    tmp = Path(tempfile.mkdtemp(prefix="gap-bench-web-"))
    data_dir = Path(args.data_dir) if args.data_dir else tmp / "data"
    database_url = args.database_url or f"sqlite:///{tmp / 'gap.sqlite3'}"
    seed(database_url, data_dir)
    levels = [int(c) for c in args.concurrency.split(",")]
    results: dict[tuple[str, int], tuple[float, float, float, int]] = {}
    for kind in ("bare", "game"):
        processes, port = start(kind, database_url, data_dir, args.workers)
        try:
            for clients in levels:
                total = max(args.requests, 30 * clients)
                rate, latencies, errors = asyncio.run(run_level(kind, port, clients, total, args.think))
                results[kind, clients] = (rate, statistics.median(latencies), p99(latencies), errors)
        finally:
            stop(processes)
    thinking = f", clients think {args.think:g} s" if args.think else ""
    print(
        f"database: {database_url.split('://')[0]}, {args.workers} worker(s) per app, "
        f"at least {args.requests} requests per level{thinking}"
    )
    print(
        f"{'clients':>7} {'bare req/s':>10} {'bare p50':>9} {'bare p99':>9} {'game req/s':>10} "
        f"{'game p50':>9} {'game p99':>9} {'ratio':>6} {'p99 x':>6} {'errors':>6}"
    )
    for clients in levels:
        bare, game = results["bare", clients], results["game", clients]
        print(
            f"{clients:>7} {bare[0]:>10.0f} {bare[1] * 1000:>7.1f}ms {bare[2] * 1000:>7.1f}ms "
            f"{game[0]:>10.0f} {game[1] * 1000:>7.1f}ms {game[2] * 1000:>7.1f}ms "
            f"{game[0] / bare[0]:>6.2f} {game[2] / bare[2]:>6.2f} {game[3]:>6}"
        )


if __name__ == "__main__":
    main()
