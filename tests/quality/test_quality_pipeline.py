"""One quality pass (fit_quality), its folder, and the report drawn from it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gap.errors import InputError
from gap.quality import QualityResult, Simulation, fit_quality, render_report


def test_fit_quality_outputs(small_sim: Simulation) -> None:
    result = fit_quality(small_sim.turns, theta=0.8)
    turns, players, images, s = result.turns, result.players, result.images, result.summary
    assert list(turns.columns) == ["turn_id", "player_id", "image_id", "pool", "verdict", "p_wrong", "kept"]
    assert len(turns) == len(small_sim.turns)
    kept = turns["kept"].to_numpy()
    assert (turns.loc[kept, "pool"] == "untainted").all() and (turns.loc[kept, "verdict"] == "wrong").all()
    assert (turns.loc[kept, "p_wrong"] >= 0.8).all()
    assert s["n_kept"] == kept.sum() and s["theta"] == 0.8
    # points: 20 per caught instructed answer + 20 x posterior per untainted Wrong
    t = small_sim.turns
    catch = (t["pool"] == "tainted") & (t["instructed"] == 1) & (t["verdict"] == "wrong")
    cand = (t["pool"] == "untainted") & (t["verdict"] == "wrong")
    assert players["points"].sum() == pytest.approx(
        20 * catch.sum() + 20 * turns.loc[cand.to_numpy(), "p_wrong"].sum()
    )
    assert {"a", "b", "informedness", "ability", "ability_se", "n_kept"} <= set(players.columns)
    assert players["ability"].notna().all()
    untainted_images = images["pool"] == "untainted"
    assert images.loc[untainted_images, "difficulty"].notna().all()
    assert set(s["player_model"]["coef"]) == {"intercept", "time", "fatigue"}


def test_without_time_columns_the_player_model_is_skipped(small_sim: Simulation) -> None:
    minimal = small_sim.turns[["turn_id", "player_id", "image_id", "pool", "instructed", "verdict"]]
    result = fit_quality(minimal)
    assert result.summary["player_model"] is None
    assert result.players["ability"].isna().all()


def test_with_nothing_kept_the_player_model_is_skipped_not_diverged(
    tmp_path: Path, small_sim: Simulation
) -> None:
    """All-Correct untainted verdicts keep nothing; fitting eq. 5 then would send coefficients to infinity."""
    turns = small_sim.turns.copy()
    turns.loc[turns["pool"] == "untainted", "verdict"] = "correct"
    result = fit_quality(turns)
    assert result.summary["n_kept"] == 0
    assert result.summary["player_model"] is None
    result.write(tmp_path, "csv")
    assert "player model: not fitted" in render_report(tmp_path).text


def test_empty_table_is_an_input_error(small_sim: Simulation) -> None:
    with pytest.raises(InputError, match="empty"):
        fit_quality(small_sim.turns.iloc[:0])


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_write_read_and_report(tmp_path: Path, small_sim: Simulation, fmt: str) -> None:
    result = fit_quality(small_sim.turns)
    paths = result.write(tmp_path, fmt)
    assert sorted(p.name for p in paths) == sorted(
        [f"turns.{fmt}", f"players.{fmt}", f"images.{fmt}", "summary.json"]
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["reliability"]["pi_by"] == "model"
    back = QualityResult.read(tmp_path)
    assert np.allclose(back.turns["p_wrong"], result.turns["p_wrong"])
    report = render_report(tmp_path)
    assert "kept at theta=0.80" in report.text and "player model: intercept" in report.text
    assert [p.name for p in report.figures] == [
        "reliability.png",
        "posterior.png",
        "kept_rate.png",
        "ability_points.png",
    ]
    for png in report.figures:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_read_needs_a_fit_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no summary\.json"):
        QualityResult.read(tmp_path)
