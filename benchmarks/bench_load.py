"""Whole sessions by simulated players against `gap serve --workers 1` and `--workers 2`.

The players of the load tests (``tests/fixtures/load.py``: sign up, start a session, ask, judge,
Wrong with a correction sometimes, to the end), driven by httpx's asyncio client on 127.0.0.1,
against a real OpenAI-compatible model server answering at once (``tests/fixtures/scale_backend``).
Prints requests/s, p50 and p99 of every request for 1 and 2 workers, and the 2-worker/1-worker
ratio of requests/s. The client runs on the same cores as the server and the database.

    python benchmarks/bench_load.py                                    # SQLite in a temporary folder
    python benchmarks/bench_load.py --database-url postgresql+psycopg://...   # an empty database
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fixtures.load import Load, gap_serve, run_players, scratch_game, serve_env
from fixtures.scale_backend import ScaleBackend


def run(
    workers: int, database_url: str, data_dir: Path, backend: ScaleBackend, args: argparse.Namespace
) -> Load:
    env = serve_env(database_url, data_dir, backend.base_url, GAP_SESSION_IMAGES=str(args.images))
    with gap_serve(workers, env, data_dir.parent / f"serve-{workers}.log") as served:
        return asyncio.run(
            run_players(
                served.url,
                args.players,
                concurrency=args.concurrency,
                budget_s=args.budget,
                prefix=f"w{workers}-",
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="an empty database (default: SQLite in a temporary folder)")
    parser.add_argument("--players", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=40, help="players playing at once")
    parser.add_argument("--images", type=int, default=2, help="pictures per session")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds before a run gives up")
    args = parser.parse_args()
    with scratch_game(args.database_url) as (settings, backend, _):
        url = settings.resolved_database_url
        results = {workers: run(workers, url, settings.data_dir, backend, args) for workers in (1, 2)}
    kind = url.split(":", 1)[0].split("+")[0]
    print(f"{kind}: {args.players} players, {args.concurrency} at once, {args.images} pictures a session")
    for workers, load in results.items():
        print(
            f"  {workers} worker(s): {len(load.latencies)} requests, {load.requests_per_s:6.1f} req/s, "
            f"p50 {load.percentile(0.5) * 1000:6.1f} ms, p99 {load.percentile(0.99) * 1000:7.1f} ms, "
            f"5xx {len(load.server_errors)}, sessions finished {len(load.finished)}"
        )
    print(f"  2 workers / 1 worker: {results[2].requests_per_s / results[1].requests_per_s:.2f}x req/s")


if __name__ == "__main__":
    main()
