"""`/api/me` while the model backend hangs, against `/api/me` while it answers, under the same load.

Players of the load tests (``tests/fixtures/load.py``) play whole sessions against `gap serve
--workers 2`, with a real OpenAI-compatible model server (``tests/fixtures/scale_backend``). A
watcher samples `/api/me` twice in the same run: first while the backend answers at once (the
baseline), then while it holds every question (only the samples taken before any question timed out
count, so each is taken while questions wait). It prints p50 and p99 of both, their ratio, and
whether the hung p99 is under the issue's 100 ms. The client runs on the same cores as the server.
``tests/scale/test_backend_down.py`` checks the same behaviour with a bound a busy machine cannot
break; this script measures the figure.

    python benchmarks/bench_backend_hang.py                                  # SQLite, temporary
    python benchmarks/bench_backend_hang.py --database-url postgresql+psycopg://...   # empty database
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fixtures.load import (
    Load,
    gap_serve,
    percentile,
    run_players,
    sample_while_questions_wait,
    scratch_game,
    serve_env,
    wait_until,
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="an empty database (default: SQLite in a temporary folder)")
    parser.add_argument("--players", type=int, default=80)
    parser.add_argument("--concurrency", type=int, default=30, help="players playing at once")
    parser.add_argument("--samples", type=int, default=200, help="`/api/me` calls per phase, at most")
    parser.add_argument("--timeout", type=float, default=6.0, help="GAP_MODEL_TIMEOUT, seconds")
    args = parser.parse_args()
    load = Load()
    phases: dict[str, list[float]] = {}
    with scratch_game(args.database_url) as (settings, backend, root):
        url = settings.resolved_database_url
        env = serve_env(url, settings.data_dir, backend.base_url, GAP_MODEL_TIMEOUT=str(args.timeout))
        with (
            gap_serve(2, env, root / "serve.log") as served,
            httpx.Client(base_url=served.url, timeout=30) as watcher,
        ):
            token = watcher.post("/api/auth/guest", json={"name": "watcher"}).json()["token"]

            def watch() -> None:
                try:
                    wait_until(lambda: len(load.verdicts) >= 50, 120)
                    phases["answering"] = sample_while_questions_wait(watcher, token, args.samples, load)
                    backend.mode = "hang"
                    backend.wait_held(3, timeout=120)
                    phases["hung"] = sample_while_questions_wait(watcher, token, args.samples, load)
                finally:
                    backend.mode = "ok"
                    backend.release.set()

            watching = threading.Thread(target=watch)
            watching.start()
            asyncio.run(
                run_players(served.url, args.players, concurrency=args.concurrency, budget_s=300, load=load)
            )
            watching.join()
    if "hung" not in phases:
        raise SystemExit("the players finished before the backend could be hung: raise --players")
    kind = url.split(":", 1)[0].split("+")[0]
    print(
        f"{kind}, 2 workers: {args.players} players, {args.concurrency} at once, "
        f"model time-out {args.timeout:g} s"
    )
    for name, seconds in phases.items():
        print(
            f"  /api/me, backend {name:9s}: {len(seconds):4d} calls, "
            f"p50 {percentile(seconds, 0.5) * 1000:6.1f} ms, p99 {percentile(seconds, 0.99) * 1000:6.1f} ms"
        )
    hung, answering = percentile(phases["hung"], 0.99), percentile(phases["answering"], 0.99)
    print(f"  p99 hung / p99 answering: {hung / answering:.2f}x; hung p99 under 100 ms: {hung < 0.1}")


if __name__ == "__main__":
    main()
