"""One estimator for every consumer: `gap quality fit`, the dashboard, settlement and the export
keep the same turns under the GAP_QUALITY_* settings (here, non-default ones)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from gap.cli import quality as quality_cli
from gap.cli import turns as turns_cli
from gap.config import Settings
from gap.db.engine import transaction
from gap.db.models import GameSession, Image, Player, PointsEntry, Round, Turn
from gap.quality import read_table, simulate
from gap.services.admin import quality_view
from gap.services.data import kept_turns
from gap.services.quality import reliability_estimator

pytestmark = pytest.mark.db

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
NON_DEFAULT = {
    "GAP_QUALITY_EPSILON": "0.08",
    "GAP_QUALITY_DELTA": "0.02",
    "GAP_QUALITY_PRIOR": "beta",
    "GAP_QUALITY_PI_BY": "image",
    "GAP_QUALITY_GROUP": "none",
    "GAP_THETA": "0.7",
}
DEFAULTS = Settings(
    quality_epsilon=0.05,
    quality_delta=0.01,
    quality_prior="grid",
    quality_pi_by="auto",
    quality_group="exact",
    theta=0.8,
)


def _load(factory: sessionmaker[Session], turns: pd.DataFrame) -> None:
    """A simulated turns table as finished sessions of real players, rounds and judged turns."""
    t = turns.assign(
        sid="s" + turns["session_id"].astype(str),
        pid=turns["player_id"].astype(str),
        iid=turns["image_id"].astype(str),
    )
    t["rid"] = t["sid"] + "r" + t["round_index"].astype(str)
    sessions = t.drop_duplicates("sid")
    rounds = t.drop_duplicates("rid")
    images = t.drop_duplicates("iid")
    with transaction(factory) as db:
        db.execute(
            insert(Player),
            [{"id": p, "name": p, "token_hash": p, "created_at": T0} for p in t["pid"].unique()],
        )
        db.execute(
            insert(Image),
            [
                {
                    "id": row.iid,
                    "pool": str(row.pool),
                    "path": f"{row.iid}.png",
                    "sha256": f"{k:064d}",
                    "mime_type": "image/png",
                    "width": 8,
                    "height": 8,
                    "original_name": f"{row.iid}.png",
                    "created_at": T0,
                }
                for k, row in enumerate(images.itertuples())
            ],
        )
        db.execute(
            insert(GameSession),
            [
                {
                    "id": row.sid,
                    "player_id": row.pid,
                    "status": "finished",
                    "images_total": 10,
                    "created_at": T0 + timedelta(minutes=k),
                    "finished_at": T0 + timedelta(minutes=k + 1),
                }
                for k, row in enumerate(sessions.itertuples())
            ],
        )
        db.execute(
            insert(Round),
            [
                {
                    "id": row.rid,
                    "session_id": row.sid,
                    "index": int(row.round_index),
                    "image_id": row.iid,
                    "pool": str(row.pool),
                }
                for row in rounds.itertuples()
            ],
        )
        db.execute(
            insert(Turn),
            [
                {
                    "id": f"t{row.turn_id}",
                    "round_id": row.rid,
                    "index": int(row.question_index),
                    "question": f"shared {row.question}" if not pd.isna(row.question) else f"q{row.turn_id}",
                    "answer": "a",
                    "instructed": bool(row.instructed),
                    "verdict": str(row.verdict),
                    "asked_at": T0,
                    "elapsed_s": float(row.elapsed_s),
                }
                for row in t.itertuples()
            ],
        )


def _settled_kept(factory: sessionmaker[Session], theta: float) -> set[str]:
    """Untainted Wrong turns whose settled ledger total is at least 20 x theta."""
    with factory() as db:
        rows = db.execute(
            select(PointsEntry.turn_id, func.sum(PointsEntry.amount))
            .join(Turn, PointsEntry.turn_id == Turn.id)
            .join(Round, Turn.round_id == Round.id)
            .where(Round.pool == "untainted")
            .group_by(PointsEntry.turn_id)
        ).all()
    return {str(turn) for turn, total in rows if float(total) >= 20 * theta - 1e-9}


def test_environment_settings_build_the_estimator(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in NON_DEFAULT.items():
        monkeypatch.setenv(name, value)
    est = reliability_estimator(Settings())
    assert (est.epsilon, est.delta, est.prior, est.pi_by, est.group_questions) == (
        0.08,
        0.02,
        "beta",
        "image",
        "none",
    )
    with pytest.raises(ValueError, match=r"quality_delta .* must be smaller than quality_epsilon"):
        Settings(quality_epsilon=0.02, quality_delta=0.03)


def test_fit_dashboard_settlement_and_export_keep_the_same_turns(
    database_url: str, db_factory: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = simulate(n_players=40, n_images=30, n_sessions=150, shared_question_rate=0.3, random_state=8)
    _load(db_factory, sim.turns)
    for name, value in {
        **NON_DEFAULT,
        "GAP_DATABASE_URL": database_url,
        "GAP_DATA_DIR": str(tmp_path / "data"),
        "GAP_SETTLE_MIN_SESSIONS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    runner = CliRunner()

    # 1. `gap turns export` then `gap quality fit`, options from the settings
    res = runner.invoke(turns_cli.app, ["export", str(tmp_path / "turns.csv")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(quality_cli.app, ["fit", str(tmp_path / "turns.csv"), "--out", str(tmp_path / "fit")])
    assert res.exit_code == 0, res.output
    fitted = read_table(tmp_path / "fit" / "turns.csv")
    by_fit = set(fitted.loc[fitted["kept"].astype(bool), "turn_id"])
    assert len(by_fit) > 20

    # 2. the dashboard's view
    view = quality_view(db_factory, settings)
    candidates = fitted[(fitted["pool"] == "untainted") & (fitted["verdict"] == "wrong")]
    assert view.kept == len(by_fit)
    assert np.allclose(sorted(view.candidate_posteriors), np.sort(candidates["p_wrong"].to_numpy()))

    # 3. settlement (`gap quality settle` fits the database itself)
    res = runner.invoke(quality_cli.app, ["settle"])
    assert res.exit_code == 0, res.output
    by_settlement = _settled_kept(db_factory, settings.theta)

    # 4. the export's kept turns
    by_export = set(kept_turns(db_factory, settings))

    assert by_fit == by_settlement == by_export
    # and the settings matter: the default estimator keeps another set
    assert set(kept_turns(db_factory, DEFAULTS)) != by_fit
