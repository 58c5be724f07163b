"""Reference answers and records from a real, migrated database (SQLite here, PostgreSQL in CI)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from fixtures.game import png_bytes
from fixtures.models import OpenAIServer
from gap.config import Settings, get_settings
from gap.data import export_records, read_records, validate_export
from gap.db.engine import make_engine, make_sessionmaker, transaction
from gap.db.migrate import alembic_config, upgrade
from gap.db.models import GameSession, Player, ReferenceAnswer, Round, Turn
from gap.errors import ConfigError, ModelError
from gap.game import Pool
from gap.models.base import ChatMessage, ImageInput
from gap.models.openai_backend import OpenAIModel
from gap.services import data as service
from gap.services.images import add_image
from gap.storage import LocalStore

pytestmark = pytest.mark.db

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


@dataclass
class Seeded:
    factory: sessionmaker[Session]
    settings: Settings
    kept: dict[str, float]
    multi_turn: str  # kept turn after a Correct one, no correction: needs the model
    corrected: str  # kept turn with the player's correction
    earlier: str  # the Correct turn before ``multi_turn``


@pytest.fixture
def seeded(settings: Settings) -> Iterator[Seeded]:
    engine = make_engine(settings.resolved_database_url)
    factory = make_sessionmaker(engine)
    with transaction(factory) as db:
        images = [
            add_image(
                db,
                images=LocalStore(settings.images_dir),
                data=png_bytes(i),
                original_name=f"img{i}.png",
                pool=Pool.UNTAINTED if i < 2 else Pool.TAINTED,
                now=T0,
            )
            for i in range(3)
        ]
        player = Player(name="Ada", token_hash=hashlib.sha256(b"ada").hexdigest(), created_at=T0)
        db.add(player)
        db.flush()
        session = GameSession(player_id=player.id, status="finished", images_total=3, created_at=T0)
        db.add(session)
        db.flush()
        rounds = [
            Round(session_id=session.id, index=i, image_id=img.id, pool=img.pool, started_at=T0)
            for i, img in enumerate(images, 1)  # 1-based, as the game stores them
        ]
        db.add_all(rounds)
        db.flush()

        def turn(rnd: Round, index: int, q: str, a: str, verdict: str, **extra: object) -> Turn:
            asked = T0 + timedelta(minutes=rnd.index, seconds=10 * index)
            t = Turn(
                round_id=rnd.id,
                index=index,
                question=q,
                answer=a,
                model="openai:game-model",
                verdict=verdict,
                asked_at=asked,
                answered_at=asked,
                judged_at=asked + timedelta(seconds=5),
                elapsed_s=10.0 * index,
                **extra,
            )
            db.add(t)
            return t

        earlier = turn(rounds[0], 1, "<image> What is in the picture?", "A street with cars.", "correct")
        multi = turn(rounds[0], 2, "How many buses are there?", "There are three buses.", "wrong")
        corrected = turn(
            rounds[1], 1, "What colour is the cat?", "The cat is white.", "wrong", correction="It is black."
        )
        turn(rounds[2], 1, "How many birds?", "Seven birds.", "wrong", instructed=True)
        db.flush()
        ids = (multi.id, corrected.id, earlier.id)
    yield Seeded(factory, settings, {ids[0]: 0.93, ids[1]: 0.88}, *ids)
    engine.dispose()


@dataclass
class Scripted:
    """A reference model that answers (or fails) without a network; keeps what it was sent."""

    fail: bool = False
    calls: int = 0
    last_messages: list[ChatMessage] | None = None
    last_system: str | None = None

    @property
    def name(self) -> str:
        return "scripted:reference"

    def answer(self, image: ImageInput, messages: list[ChatMessage], system: str | None = None) -> str:
        self.calls += 1
        self.last_messages, self.last_system = messages, system
        if self.fail:
            raise ModelError("HTTP 503 from the reference server")
        return "There is exactly one bus."


def references(factory: sessionmaker[Session]) -> dict[str, ReferenceAnswer]:
    with factory() as db:
        return {r.turn_id: r for r in db.scalars(select(ReferenceAnswer))}


def fill(s: Seeded, model: object, **kwargs: object) -> service.ReferenceReport:
    return service.fill_references(
        s.factory,
        model,
        list(s.kept),
        images=LocalStore(s.settings.images_dir),
        backoff=0,
        **kwargs,  # type: ignore[arg-type]
    )


def test_migration_adds_and_removes_the_table(database_url: str) -> None:
    from alembic import command

    engine = make_engine(database_url)
    try:
        assert "reference_answers" in inspect(engine).get_table_names()
        command.check(alembic_config(database_url))  # the models and the migrations agree
        command.downgrade(alembic_config(database_url), "0001")
        assert "reference_answers" not in inspect(engine).get_table_names()
        upgrade(database_url)
        assert "reference_answers" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_player_corrections_first_then_the_model(seeded: Seeded) -> None:
    model = Scripted()
    report = fill(seeded, model)
    assert (report.kept, report.from_players, report.asked, report.answered, report.failed) == (2, 1, 1, 1, 0)
    rows = references(seeded.factory)
    assert rows[seeded.corrected].source == "player" and rows[seeded.corrected].text == "It is black."
    ref = rows[seeded.multi_turn]
    assert (ref.source, ref.model, ref.text, ref.attempts) == (
        "model",
        "scripted:reference",
        "There is exactly one bus.",
        1,
    )
    assert ref.prompt_version == "reference-v1"
    # The model saw the round so far, placeholders removed, and the wrong answer in its brief.
    assert model.last_messages == [
        ChatMessage("user", "What is in the picture?"),
        ChatMessage("assistant", "A street with cars."),
        ChatMessage("user", "How many buses are there?"),
    ]
    assert model.last_system is not None and "There are three buses." in model.last_system


def test_resumable_nothing_is_asked_twice(seeded: Seeded) -> None:
    fill(seeded, Scripted())
    again = Scripted()
    report = fill(seeded, again)
    assert again.calls == 0
    assert (report.already, report.from_players, report.asked) == (2, 0, 0)
    assert fill(seeded, None).asked == 0  # no model needed when nothing is missing


def test_failures_are_recorded_retried_next_run_and_never_corrupt_exports(
    seeded: Seeded, tmp_path: Path
) -> None:
    report = fill(seeded, Scripted(fail=True), retries=2)
    assert report.failed == 1 and "HTTP 503" in report.failures[seeded.multi_turn]
    row = references(seeded.factory)[seeded.multi_turn]
    assert row.text is None and row.attempts == 3 and "HTTP 503" in (row.last_error or "")

    records, missing = service.build_records(
        seeded.factory, seeded.kept, theta=0.8, images=LocalStore(seeded.settings.images_dir)
    )
    assert missing == [seeded.multi_turn] and [r.id for r in records] == [seeded.corrected]
    export_records(records, tmp_path / "x", fmt="llava")
    assert validate_export(tmp_path / "x").ok

    report = fill(seeded, Scripted())
    assert report.answered == 1
    row = references(seeded.factory)[seeded.multi_turn]
    assert row.text and row.attempts == 4 and row.last_error is None
    assert service.reference_status(seeded.factory, list(seeded.kept)) == {
        "player": 1,
        "model": 1,
        "failed": 0,
        "missing": 0,
    }


def test_a_missing_model_is_a_config_error(seeded: Seeded) -> None:
    with pytest.raises(ConfigError, match="GAP_REFERENCE_MODEL"):
        fill(seeded, None)


def test_against_a_real_openai_compatible_server(seeded: Seeded, openai_server: OpenAIServer) -> None:
    model = OpenAIModel(
        openai_server.model, base_url=openai_server.base_url, api_key="EMPTY", timeout=60, max_new_tokens=12
    )
    report = fill(seeded, model)
    assert report.answered == 1 and report.failed == 0
    ref = references(seeded.factory)[seeded.multi_turn]
    assert ref.text and ref.model == f"openai:{openai_server.model}"


def test_records_from_the_database(seeded: Seeded) -> None:
    fill(seeded, Scripted())
    records, missing = service.build_records(
        seeded.factory, seeded.kept, theta=0.8, images=LocalStore(seeded.settings.images_dir)
    )
    assert not missing
    by_id = {r.id: r for r in records}
    multi = by_id[seeded.multi_turn]
    assert [m.text for m in multi.messages] == [
        "What is in the picture?",
        "A street with cars.",
        "How many buses are there?",
        "There is exactly one bus.",
    ]
    assert multi.rejected == "There are three buses."
    assert Path(multi.image).is_file()
    prov = multi.provenance
    assert (prov.source, prov.posterior, prov.theta, prov.model) == ("gap", 0.93, 0.8, "openai:game-model")
    assert (prov.reference_source, prov.reference_model) == ("model", "scripted:reference")
    assert len(prov.players) == 1 and prov.turn_ids == (seeded.multi_turn,)
    assert prov.asked_at and prov.judged_at and prov.referenced_at
    corrected = by_id[seeded.corrected]
    assert corrected.provenance.reference_source == "player" and corrected.answer == "It is black."


def test_kept_turns_come_from_the_quality_model(seeded: Seeded) -> None:
    pytest.importorskip("gap.services.quality")
    kept = service.kept_turns(seeded.factory, Settings(), theta=0.01)
    assert set(kept) <= {seeded.multi_turn, seeded.corrected}  # untainted Wrong turns only
    assert all(0.01 <= p <= 1 for p in kept.values())


# --- the CLI against the database -------------------------------------------------------------


@pytest.fixture
def cli_env(seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Settings from the environment, as `gap` reads them; kept turns fixed to the seeded ones."""
    env = {
        "GAP_DATA_DIR": str(seeded.settings.data_dir),
        "GAP_DATABASE_URL": seeded.settings.resolved_database_url,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(service, "kept_turns", lambda factory, settings, *, theta=None: dict(seeded.kept))
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()


def test_cli_references_and_export(
    seeded: Seeded, cli_env: dict[str, str], openai_server: OpenAIServer, tmp_path: Path
) -> None:
    from gap.cli.data import app

    runner = CliRunner()
    result = runner.invoke(app, ["export", "--format", "sharegpt", "--out", str(tmp_path / "early")])
    assert result.exit_code == 0, result.output  # the player's correction is usable at once
    assert "1 kept turn(s) have no reference answer yet" in result.output
    assert [r.id for r in read_records(tmp_path / "early")] == [seeded.corrected]

    env = {"GAP_REFERENCE_MODEL": openai_server.model, "GAP_REFERENCE_BASE_URL": openai_server.base_url}
    result = runner.invoke(app, ["references", "--concurrency", "2"], env=env)
    assert result.exit_code == 0, result.output
    assert "answered" in result.output

    out = tmp_path / "x"
    result = runner.invoke(app, ["export", "--format", "llava", "--out", str(out), "--split", "val=0.5"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["source"] == "database" and manifest["missing_references"] == 0
    assert {r.split for r in read_records(out)} == {"train", "val"}
    assert runner.invoke(app, ["validate", str(out)]).exit_code == 0


def test_cli_references_reports_a_failing_server(seeded: Seeded, cli_env: dict[str, str]) -> None:
    from gap.cli.data import app

    args = [
        "references",
        "--model",
        "m",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--retries",
        "1",
        "--backoff",
        "0",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "still have no reference answer" in result.output
    assert references(seeded.factory)[seeded.multi_turn].attempts == 2
