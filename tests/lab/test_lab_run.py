"""`gap lab run --size ci` end to end: the real HTTP game, the real trainer, a well-formed report.

Two ci runs (seeds 0 and 1) share one base-model cache, so the second reuses the first's models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gap.cli import app
from gap.lab.loop import THETAS
from gap.lab.world import QUESTION_TYPES

pytestmark = pytest.mark.slow

GAIN_KEYS = {"diff", "ci_low", "ci_high", "p_value", "n"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lab-cache")


def _run(out: Path, seed: int, cache: Path) -> dict[str, Any]:
    result = CliRunner().invoke(
        app, ["lab", "run", "--size", "ci", "--out", str(out), "--seed", str(seed), "--cache", str(cache)]
    )
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("lab-seed-0")
    return out, _run(out, 0, cache)


def _check_gain(gain: Any) -> None:
    assert set(gain) == GAIN_KEYS
    assert gain["ci_low"] <= gain["diff"] <= gain["ci_high"]
    assert 0 < gain["p_value"] <= 1


def test_ci_run_writes_a_well_formed_report(first: tuple[Path, dict[str, Any]]) -> None:
    out, data = first
    for name in ("report.md", "per_type.png", "theta_sweep.png", "baselines.png", "fatigue.png"):
        assert (out / name).stat().st_size > 0, name
    assert set(data["weak_types"]) <= set(QUESTION_TYPES) and data["weak_types"]
    assert set(data["gain"]) == set(QUESTION_TYPES)
    for gain in data["gain"].values():
        _check_gain(gain)
    assert [row["theta"] for row in data["theta_sweep"]] == list(THETAS)
    kept = [row["kept"] for row in data["theta_sweep"]]
    assert kept == sorted(kept, reverse=True) and kept[0] > 0  # a higher theta keeps fewer
    for row in data["theta_sweep"]:
        assert set(row) >= {"theta", "kept", "precision", "gain"}
        if row["trained_on"]:
            _check_gain(row["gain"])
            assert 0 <= row["precision"] <= 1
    assert set(data["baselines"]) >= {"random", "unfiltered", "oracle"}
    for name in ("random", "unfiltered", "oracle"):
        _check_gain(data["baselines"][name])
    assert data["cross_model"]["family"] == "qwen2_5_vl"
    _check_gain(data["cross_model"]["gain"])
    assert 0 <= data["kept_precision"] <= 1
    assert data["taint"]["n"]["instructed_wrong"] > 0 and 0 <= data["taint"]["instructed_wrong"] <= 1
    assert set(data["fatigue"]) == {"fitted", "truth", "verdict_accuracy_by_image"}
    # the real game: every turn the players judged is a turn the server stored
    assert data["quality_fit"]["n_turns"] == data["turns"] > 0
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "Theta sweep" in report and "taint instruction" in report


def test_fine_tuning_beats_the_base_on_its_weak_types(first: tuple[Path, dict[str, Any]]) -> None:
    _, data = first
    weak = data["gain_weak"]
    assert weak["diff"] > 0 and weak["p_value"] < 0.05, weak
    base = data["accuracy"]["base"]
    strong = [t for t in QUESTION_TYPES if t not in data["weak_types"]]
    assert max(base[t]["score"] for t in data["weak_types"]) < min(base[t]["score"] for t in strong)


def test_another_seed_changes_the_figures_and_reuses_the_base_models(
    first: tuple[Path, dict[str, Any]], cache: Path, tmp_path: Path
) -> None:
    _, data = first
    models = sorted(p.name for p in cache.iterdir() if not p.name.startswith("."))
    second = _run(tmp_path / "seed-1", 1, cache)
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) == models
    assert second["base_models"] == data["base_models"]
    assert second["stages"]["base models (cached by recipe)"]["wall_s"] < 5
    assert second["turns"] != data["turns"] or second["theta_sweep"] != data["theta_sweep"]
    assert second["gain"] != data["gain"]
    assert second["accuracy"]["base"] != data["accuracy"]["base"]  # fresh test scenes
