"""Exporting turns and settling untainted points against a real, migrated database."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from gap.cli import quality as quality_cli
from gap.cli import turns as turns_cli
from gap.config import get_settings
from gap.db.engine import transaction
from gap.db.models import GameSession, Image, Player, PointsEntry, Round, Turn
from gap.errors import InputError
from gap.quality import validate_turns
from gap.services.players import credited_points, pending_points
from gap.services.quality import SettlePolicy, export_turns, settle_points

pytestmark = pytest.mark.db

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


@dataclass
class Seeded:
    untainted_wrong: list[str]  # turn ids
    catches: list[str]
    players: list[str]
    judged: int


def _seed(factory: sessionmaker[Session]) -> Seeded:
    """Two players, one session each: a tainted and an untainted round, plus an unjudged turn."""
    out = Seeded([], [], [], 0)
    with transaction(factory) as db:
        images = {}
        for k, pool in enumerate(["tainted", "tainted", "untainted", "untainted"]):
            img = Image(
                pool=pool,
                path=f"{k}.png",
                sha256=f"{k:064d}",
                mime_type="image/png",
                width=8,
                height=8,
                original_name=f"{k}.png",
                created_at=T0,
            )
            db.add(img)
            images[k] = img
        db.flush()
        for p in range(2):
            player = Player(name=f"P{p}", token_hash=f"h{p}", created_at=T0)
            db.add(player)
            db.flush()
            out.players.append(player.id)
            session = GameSession(
                player_id=player.id, status="finished", images_total=2, created_at=T0 + timedelta(minutes=p)
            )
            db.add(session)
            db.flush()
            tainted = Round(session_id=session.id, index=1, image_id=images[p].id, pool="tainted")
            untainted = Round(session_id=session.id, index=2, image_id=images[2 + p].id, pool="untainted")
            db.add_all([tainted, untainted])
            db.flush()
            rows = [
                (tainted, 1, False, "correct", 5.0),
                (tainted, 2, True, "wrong", 20.0),
                (untainted, 1, False, "correct", 4.0),
                (untainted, 2, False, "wrong", 31.5),
            ]
            for rnd, index, instructed, verdict, elapsed in rows:
                turn = Turn(
                    round_id=rnd.id,
                    index=index,
                    question=f"q{index}",
                    answer="a",
                    instructed=instructed,
                    verdict=verdict,
                    asked_at=T0,
                    elapsed_s=elapsed,
                )
                db.add(turn)
                db.flush()
                out.judged += 1
                if verdict == "wrong":
                    kind = "catch" if rnd.pool == "tainted" else "provisional"
                    (out.catches if kind == "catch" else out.untainted_wrong).append(turn.id)
                    db.add(
                        PointsEntry(
                            player_id=player.id,
                            session_id=session.id,
                            turn_id=turn.id,
                            kind=kind,
                            amount=20.0,
                            created_at=T0,
                        )
                    )
            extra = Round(session_id=session.id, index=3, image_id=images[3 - p].id, pool="untainted")
            db.add(extra)
            db.flush()
            db.add(
                Turn(
                    round_id=extra.id,
                    index=1,
                    question="pending",
                    instructed=False,
                    asked_at=T0,
                    elapsed_s=1.0,
                )
            )
    return out


@pytest.fixture
def seeded(db_factory: sessionmaker[Session]) -> Seeded:
    return _seed(db_factory)


def _turn_totals(
    factory: sessionmaker[Session], kinds: tuple[str, ...] = ("provisional", "settlement")
) -> dict[str, float]:
    with factory() as db:
        rows = db.execute(
            select(PointsEntry.turn_id, func.sum(PointsEntry.amount))
            .where(PointsEntry.kind.in_(kinds))
            .group_by(PointsEntry.turn_id)
        ).all()
    return {t: float(a) for t, a in rows}


def _lines(factory: sessionmaker[Session]) -> int:
    with factory() as db:
        return int(db.scalar(select(func.count()).select_from(PointsEntry)) or 0)


def test_export_turns(db_factory: sessionmaker[Session], seeded: Seeded) -> None:
    turns = export_turns(db_factory)
    assert len(turns) == seeded.judged == 8  # the pending turn is left out
    assert list(turns.columns) == [
        "turn_id",
        "session_id",
        "player_id",
        "image_id",
        "pool",
        "instructed",
        "verdict",
        "elapsed_s",
        "round_index",
        "question_index",
        "question",
        "collection_round",
        "hinted",
    ]
    assert turns["hinted"].tolist() == [0] * 8  # no hints in play
    validate_turns(turns)
    first = turns.iloc[:4]
    assert first["pool"].tolist() == ["tainted", "tainted", "untainted", "untainted"]
    assert first["instructed"].tolist() == [0, 1, 0, 0]
    assert first["round_index"].tolist() == [1, 1, 2, 2]
    assert first["question_index"].tolist() == [1, 2, 1, 2]
    assert first["elapsed_s"].tolist() == [5.0, 20.0, 4.0, 31.5]
    assert set(turns["player_id"]) == set(seeded.players)


def test_export_of_an_empty_database(db_factory: sessionmaker[Session]) -> None:
    turns = export_turns(db_factory)
    assert turns.empty and "turn_id" in turns.columns


ONE = SettlePolicy(min_sessions=1)  # each seeded player has a single finished session


def _settled_sessions(factory: sessionmaker[Session]) -> int:
    with factory() as db:
        return int(db.scalar(select(func.count()).where(GameSession.settled_at.is_not(None))) or 0)


def test_settle_is_idempotent_and_adjusts_by_the_difference(
    db_factory: sessionmaker[Session], seeded: Seeded
) -> None:
    """The seed is a database from before batched settlement: provisional 20s and catches on the ledger."""
    a, b = seeded.untainted_wrong
    caught = {c: 0.99 for c in seeded.catches}  # the fit covers tainted turns too; their price is 20
    catches_before = _turn_totals(db_factory, ("catch",))
    first = settle_points(db_factory, {a: 0.9, b: 0.25, **caught}, policy=ONE, now=T0 + timedelta(hours=1))
    assert (first.players, first.sessions) == (2, 2)
    assert (first.candidates, first.settled, first.adjusted, first.missing) == (4, 4, 2, 0)
    assert first.change == pytest.approx(20 * 0.9 - 20 + 20 * 0.25 - 20)
    assert _turn_totals(db_factory) == pytest.approx({a: 18.0, b: 5.0})
    lines = _lines(db_factory)

    frame = pd.DataFrame({"turn_id": [a, b], "p_wrong": [0.9, 0.25]})
    again = settle_points(db_factory, frame, policy=ONE)
    assert again.sessions == 0 and again.adjusted == 0 and _lines(db_factory) == lines  # never twice

    # credited points move only when the player has a new batch: nothing is due here
    later = settle_points(db_factory, {a: 0.95, b: 0.25, "unknown-turn": 0.5, **caught}, policy=ONE)
    assert later.adjusted == 0 and _turn_totals(db_factory) == pytest.approx({a: 18.0, b: 5.0})
    assert _turn_totals(db_factory, ("catch",)) == catches_before  # catches were already right

    with db_factory() as db:
        for player in seeded.players:
            assert credited_points(db, player) in (pytest.approx(20 + 18.0), pytest.approx(20 + 5.0))
            assert pending_points(db, player) == 0


def test_a_batch_waits_for_enough_sessions_or_age(db_factory: sessionmaker[Session], seeded: Seeded) -> None:
    a, b = seeded.untainted_wrong
    policy = SettlePolicy(min_sessions=2, max_age=timedelta(days=1))
    early = settle_points(db_factory, {a: 0.5, b: 0.5}, policy=policy, now=T0 + timedelta(hours=1))
    assert early.sessions == 0 and _settled_sessions(db_factory) == 0
    with db_factory() as db:  # not credited: neither provisional lines nor catches count yet
        assert [credited_points(db, p) for p in seeded.players] == [0.0, 0.0]
        assert [pending_points(db, p) for p in seeded.players] == [40.0, 40.0]
    caught = {c: 0.99 for c in seeded.catches}
    aged = settle_points(db_factory, {a: 0.5, b: 0.5, **caught}, policy=policy, now=T0 + timedelta(days=2))
    assert aged.sessions == 2 and _settled_sessions(db_factory) == 2


def test_settle_waits_for_turns_without_a_posterior(
    db_factory: sessionmaker[Session], seeded: Seeded
) -> None:
    a, b = seeded.untainted_wrong
    untainted_only = settle_points(db_factory, {a: 0.5, b: 0.5}, policy=ONE)
    assert (untainted_only.players, untainted_only.missing) == (0, 2)  # a tainted turn waits alike
    summary = settle_points(db_factory, {a: 0.5, **{c: 0.99 for c in seeded.catches}}, policy=ONE)
    assert (summary.players, summary.settled, summary.missing) == (1, 3, 1)
    assert _turn_totals(db_factory) == pytest.approx({a: 10.0, b: 20.0})
    assert _settled_sessions(db_factory) == 1  # b's player waits for a fit that covers the turn


def test_dry_run_writes_nothing(db_factory: sessionmaker[Session], seeded: Seeded) -> None:
    lines = _lines(db_factory)
    first = {seeded.untainted_wrong[0]: 0.1, seeded.catches[0]: 0.99}  # the first player's Wrongs
    summary = settle_points(db_factory, first, policy=ONE, dry_run=True)
    assert summary.adjusted == 1 and _lines(db_factory) == lines and _settled_sessions(db_factory) == 0


def test_bad_posteriors_are_rejected(db_factory: sessionmaker[Session], seeded: Seeded) -> None:
    with pytest.raises(InputError, match=r"p_wrong must be in \[0, 1\]"):
        settle_points(db_factory, {seeded.untainted_wrong[0]: 1.5})
    with pytest.raises(InputError, match="needs columns turn_id and p_wrong"):
        settle_points(db_factory, pd.DataFrame({"turn_id": ["x"]}))


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("GAP_DATABASE_URL", database_url)
    monkeypatch.setenv("GAP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GAP_SETTLE_MIN_SESSIONS", "1")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_cli_export_fit_and_settle(
    db_factory: sessionmaker[Session], seeded: Seeded, cli_env: None, tmp_path: Path
) -> None:
    runner = CliRunner()
    out = tmp_path / "turns.csv"
    res = runner.invoke(turns_cli.app, ["export", str(out)])
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(out)) == 8

    fit = tmp_path / "fit"
    res = runner.invoke(quality_cli.app, ["fit", str(out), "--out", str(fit)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(quality_cli.app, ["settle", "--from", str(fit)])
    assert res.exit_code == 0, res.output
    assert "2 sessions of 2 players" in res.output
    posterior = pd.read_csv(fit / "turns.csv", dtype={"turn_id": str}).set_index("turn_id")["p_wrong"]
    totals = _turn_totals(db_factory)
    for turn in seeded.untainted_wrong:
        assert totals[turn] == pytest.approx(20 * posterior[turn])

    # settle straight from the database: fits, settles; a second run changes nothing
    res = runner.invoke(quality_cli.app, ["settle"])
    assert res.exit_code == 0, res.output
    lines = _lines(db_factory)
    res = runner.invoke(quality_cli.app, ["settle"])
    assert res.exit_code == 0 and "adjusted 0" in res.output
    assert _lines(db_factory) == lines

    res = runner.invoke(turns_cli.app, ["export", str(tmp_path / "turns.txt")])
    assert res.exit_code == 1 and "unknown table format" in res.output
