"""The background worker (issue 9.11, 9.12): settlement on its own, abandoned sessions, stored fits."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from fixtures.game import ManualClock, login, seed_images
from fixtures.points import ScriptedModel, careful, play_session, spammer
from gap.cli import app as gap_app
from gap.config import Settings, get_settings
from gap.db.engine import make_engine, make_sessionmaker, reading
from gap.db.models import GameSession, PointsEntry, QualityFit
from gap.services.admin import stored_quality_view
from gap.services.leaderboard import Window, leaderboard
from gap.services.quality import SettlePolicy
from gap.services.worker import WorkerConfig, run_pass, start_thread, worker_config

pytestmark = pytest.mark.db
ROUND_S = 120.0


@pytest.fixture
def factory(settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings.resolved_database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def config(settings: Settings, min_sessions: int = 3) -> WorkerConfig:
    base = worker_config(settings.model_copy(update={"session_images": 4}))
    return replace(base, policy=SettlePolicy(min_sessions=min_sessions, max_age=base.policy.max_age))


def count(factory: sessionmaker[Session], stmt: Any) -> int:
    with reading(factory) as db:
        return int(db.scalar(stmt) or 0)


def test_two_workers_at_once_never_double_settle(
    settings: Settings, make_client: Any, clock: ManualClock, factory: sessionmaker[Session]
) -> None:
    seed_images(settings)
    client = make_client(ScriptedModel(random.Random(1)), rng=random.Random(2), session_images=4)
    for i in range(4):
        auth = login(client, f"p{i}")
        for _ in range(3):
            play_session(client, auth, clock, judge=careful, max_questions=2, round_seconds=ROUND_S)
    cfg = config(settings)
    barrier = threading.Barrier(2)
    reports: list[Any] = []

    def work() -> None:
        barrier.wait()
        reports.append(run_pass(factory, cfg, clock()))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    credited = sorted(r.settlement.sessions for r in reports if r.settlement is not None)
    assert sum(credited) == 12 and credited[-1] == 12  # one worker credited all, the other nothing
    with reading(factory) as db:
        per_turn = Counter(db.scalars(select(PointsEntry.turn_id)))
    assert per_turn and max(per_turn.values()) == 1  # one line per turn: nothing settled twice
    again = run_pass(factory, cfg, clock())
    assert again.settlement is None and count(factory, select(func.count(PointsEntry.id))) == len(per_turn)


def test_abandoned_sessions_get_closed_and_credited(
    settings: Settings, make_client: Any, clock: ManualClock, factory: sessionmaker[Session]
) -> None:
    seed_images(settings)
    client = make_client(ScriptedModel(random.Random(3), error_rate=1.0), session_images=4)
    auth = login(client)
    started = client.post("/api/sessions", headers=auth).json()
    asked = client.post(
        f"/api/rounds/{started['round']['round_id']}/questions", headers=auth, json={"question": "?"}
    ).json()
    client.post(f"/api/turns/{asked['turn_id']}/verdict", headers=auth, json={"verdict": "wrong"})
    # the player leaves during round 2
    cfg = config(settings, min_sessions=1)
    clock.advance(ROUND_S + 1)  # round 2 ran out, but a player might still come back
    assert run_pass(factory, cfg, clock()).closed == 0
    clock.advance(ROUND_S)
    report = run_pass(factory, cfg, clock())
    assert report.closed == 1
    with reading(factory) as db:
        session = db.get(GameSession, started["session_id"])
        assert session is not None and session.status == "finished" and session.settled_at is not None
        assert all(r.ended_at is not None for r in session.rounds)
    assert report.settlement is not None and report.settlement.sessions == 1
    me = client.get("/api/me", headers=auth).json()
    assert me["points_pending"] == 0 and me["points"] >= 0
    state = client.get(f"/api/sessions/{started['session_id']}", headers=auth).json()
    assert state["status"] == "finished" and state["summary"]["caught"] == 1


def test_without_a_worker_nothing_is_lost_only_late(
    settings: Settings, make_client: Any, clock: ManualClock, factory: sessionmaker[Session]
) -> None:
    seed_images(settings)
    client = make_client(ScriptedModel(random.Random(4)), rng=random.Random(5), session_images=4)
    auth = login(client)
    for _ in range(3):
        play_session(client, auth, clock, judge=spammer, max_questions=1, round_seconds=ROUND_S)
    client.post("/api/sessions", headers=auth)  # a fourth session, left behind
    clock.advance(30 * 86400)  # a month without any worker
    me = client.get("/api/me", headers=auth).json()
    assert (me["points"], me["points_pending"]) == (0, 20.0 * 12)  # all Wrongs still there, pending
    assert client.get("/api/leaderboard").json() == []
    report = run_pass(factory, config(settings), clock())
    assert report.closed == 1 and report.settlement is not None and report.settlement.sessions == 4
    me = client.get("/api/me", headers=auth).json()
    assert me["points_pending"] == 0
    with reading(factory) as db:
        total = float(db.scalar(select(func.sum(PointsEntry.amount))) or 0.0)
    assert me["points"] == pytest.approx(total) and len(client.get("/api/leaderboard").json()) == 1


def test_the_dashboard_fit_is_stored_and_refitted_only_on_new_verdicts(
    settings: Settings, make_client: Any, clock: ManualClock, factory: sessionmaker[Session]
) -> None:
    seed_images(settings)
    client = make_client(ScriptedModel(random.Random(6)), rng=random.Random(7), session_images=4)
    with reading(factory) as db:
        assert not stored_quality_view(db, theta=0.8).available  # nothing fitted yet: says so
    auth = login(client)
    play_session(client, auth, clock, judge=careful, max_questions=2, round_seconds=ROUND_S)
    cfg = config(settings)
    assert run_pass(factory, cfg, clock()).refitted
    assert not run_pass(factory, cfg, clock()).refitted  # same verdicts: no refit
    with reading(factory) as db:
        view = stored_quality_view(db, theta=0.8)
    assert view.available and view.pi is not None and 0 < view.pi < 1
    play_session(client, auth, clock, judge=careful, max_questions=2, round_seconds=ROUND_S)
    assert run_pass(factory, cfg, clock()).refitted
    assert count(factory, select(func.count(QualityFit.id))) == 1  # only the newest is kept


def test_gap_worker_once(settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GAP_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("GAP_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    result = CliRunner().invoke(gap_app, ["worker", "--once"])
    assert result.exit_code == 0, result.output
    assert "closed 0 abandoned sessions" in result.output and "stored a new quality fit" in result.output


def test_spammers_end_below_careful_players_on_every_board(
    settings: Settings, make_client: Any, clock: ManualClock, factory: sessionmaker[Session]
) -> None:
    """Issue 9.11: always-Wrong players top the boards on volume while points are provisional; once
    settlement prices their Wrongs (a new player's from the population prior), they end below."""
    seed_images(settings)
    client = make_client(ScriptedModel(random.Random(8)), rng=random.Random(9), session_images=4)
    players: dict[str, Callable[[str], str]] = {f"careful{i}": careful for i in range(6)}
    players |= {f"spam{i}": spammer for i in range(6)}
    auths = {name: login(client, name) for name in players}
    for _ in range(3):
        for name, judge in players.items():
            play_session(client, auths[name], clock, judge=judge, max_questions=4, round_seconds=ROUND_S)
    pending = {name: client.get("/api/me", headers=auths[name]).json()["points_pending"] for name in players}
    spam_pending = [pending[n] for n in players if n.startswith("spam")]
    # provisionally, volume wins: every spammer shows at least as much as any careful player
    assert min(spam_pending) == 12 * 20.0 >= max(pending[n] for n in players if n.startswith("careful"))
    report = run_pass(factory, config(settings), clock())
    assert report.settlement is not None and report.settlement.sessions == 36
    with reading(factory) as db:
        for window in Window:
            board = leaderboard(db, window=window, limit=100, now=clock())
            points = {s.name: s.points for s in board}
            careful_pts = [points[n] for n in players if n.startswith("careful")]
            spam_pts = [points[n] for n in players if n.startswith("spam")]
            assert board[0].name.startswith("careful"), board
            assert sum(spam_pts) / 6 < 0.75 * sum(careful_pts) / 6, (window, points)


def test_the_loop_in_a_thread_works_by_itself_until_stopped(
    settings: Settings, make_client: Any, clock: ManualClock, factory: sessionmaker[Session]
) -> None:
    """What `gap serve` starts unless GAP_WORKER=false: no request needed for a session to close."""
    seed_images(settings)
    client = make_client(ScriptedModel(random.Random(10)), session_images=4)
    auth = login(client)
    session_id = client.post("/api/sessions", headers=auth).json()["session_id"]
    clock.advance(3 * ROUND_S)
    thread, stop = start_thread(factory, config(settings), interval=0.01, clock=clock)
    try:
        for _ in range(2000):  # wait for the state, not for a time
            with reading(factory) as db:
                session = db.get(GameSession, session_id)
                if session is not None and session.status == "finished":
                    break
            threading.Event().wait(0.005)
        assert session is not None and session.status == "finished"
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
