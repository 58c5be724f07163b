"""Issue 9.3: what a session shows cannot be mapped to an image's pool.

The attack of the issue, through the real API: a player marks Wrong on one answer per session and
lets the other rounds time out, then reads everything it can see (the session's end, its own points
before and after, the leaderboard) to name the pool of the image it flagged. On the old behaviour a
session's total said it (0: tainted false alarm; 20: anything else); now points are credited by
settlement, several sessions at a time, and nothing per session depends on the pool.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from fixtures.game import ManualClock, login, seed_images
from fixtures.points import ScriptedModel, play_session
from gap.config import Settings
from gap.db.engine import make_engine, make_sessionmaker, reading
from gap.db.models import GameSession, Image, Round, Turn
from gap.services.worker import run_pass, worker_config

pytestmark = pytest.mark.db
PLAYERS, SESSIONS, ROUND_S = 30, 3, 120.0


@dataclass
class Guess:
    image: str  # sha256 of the bytes the attacker saw
    pool: str  # truth
    instructed: bool  # truth
    seen: tuple[Any, ...]  # everything visible about this session


def accuracy_interval(hits: int, n: int) -> tuple[float, float]:
    """Wilson 95% interval of an accuracy."""
    z, p = 1.96, hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def old_session_total(pool: str, instructed: bool) -> float:
    """What the old session view showed for one Wrong: a catch or a provisional 20, else nothing."""
    return 20.0 if pool == "untainted" or instructed else 0.0


def test_one_wrong_per_session_cannot_name_the_pool(
    settings: Settings, make_client: Any, clock: ManualClock
) -> None:
    seed_images(settings)
    client = make_client(ScriptedModel(random.Random(1)), rng=random.Random(2))
    engine = make_engine(settings.resolved_database_url)
    factory = make_sessionmaker(engine)
    worker = worker_config(settings)
    guesses: list[Guess] = []
    for p in range(PLAYERS):
        auth = login(client, f"attacker{p}")
        before = client.get("/api/me", headers=auth).json()
        for _ in range(SESSIONS):
            session_id, flagged = play_session(
                client,
                auth,
                clock,
                judge=lambda answer: "wrong",
                max_questions=1,
                round_seconds=ROUND_S,
                play_round=lambda index: index == 1,
            )
            view = client.get(f"/api/sessions/{session_id}", headers=auth).json()
            run_pass(factory, worker, clock())  # the worker runs between sessions
            after = client.get("/api/me", headers=auth).json()
            board = {r["name"]: r["points"] for r in client.get("/api/leaderboard?limit=500").json()}
            with reading(factory) as db:
                pool, instructed = db.execute(
                    select(Round.pool, Turn.instructed)
                    .join(Turn, Turn.round_id == Round.id)
                    .join(GameSession, GameSession.id == Round.session_id)
                    .where(GameSession.id == session_id, Turn.verdict == "wrong")
                ).one()
            assert "points" not in view and len(flagged) == 1
            seen = (
                tuple(sorted(view["summary"].items())),
                after["points"] - before["points"],
                after["points_pending"] - before["points_pending"],
                board.get(f"attacker{p}"),
            )
            guesses.append(Guess(hashlib.sha256(flagged[0]).hexdigest(), pool, bool(instructed), seen))
            before = after
    with reading(factory) as db:
        tainted = set(db.scalars(select(Image.sha256).where(Image.pool == "tainted")))
    engine.dispose()
    n = len(guesses)
    assert n == PLAYERS * SESSIONS

    # The end of a session looks the same whatever the pool: one question, one catch, 20 pending.
    assert {g.seen[0] for g in guesses} == {(("caught", 1), ("corrections", 0), ("questions", 1))}
    assert {g.seen[2] for g in guesses} <= {20.0, 20.0 - 20.0 * SESSIONS}

    # The attack: a session whose points did not move was a tainted false alarm.
    hits = sum((g.seen[1] == 0) == (g.pool == "tainted") for g in guesses)
    low, high = accuracy_interval(hits, n)
    assert low <= 0.5 <= high, f"per-session attack names {hits}/{n} pools"

    # Control: the old per-session totals on these very turns named far more than chance ...
    old_hits = sum((old_session_total(g.pool, g.instructed) == 0) == (g.pool == "tainted") for g in guesses)
    assert accuracy_interval(old_hits, n)[0] > 0.6, f"old behaviour: {old_hits}/{n}"
    # ... and, pooled over players, named images: every image that ever scored 0 was tainted.
    zero = {g.image for g in guesses if old_session_total(g.pool, g.instructed) == 0}
    truth = {g.image: g.pool for g in guesses}
    assert zero and all(truth[i] == "tainted" for i in zero) and zero <= tainted

    # A batch-aware attacker: credited points move once per batch of SESSIONS Wrongs; it names all
    # images of a batch tainted when the batch paid anything (catches happen on tainted images only).
    batches: defaultdict[int, list[Guess]] = defaultdict(list)
    for i, g in enumerate(guesses):
        batches[i // SESSIONS].append(g)
    batch_hits = sum(
        (batch[-1].seen[1] > 0) == (g.pool == "tainted") for batch in batches.values() for g in batch
    )
    print(f"per-session attack {hits}/{n}, old behaviour {old_hits}/{n}, batch-aware {batch_hits}/{n}")
    assert batch_hits < old_hits
