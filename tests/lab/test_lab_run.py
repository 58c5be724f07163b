"""`gap lab run --size ci` end to end: the real HTTP game, the real trainer, a well-formed report.

Two ci runs (seeds 0 and 1) share the default base-model cache (~/.cache/gap/lab, by recipe hash),
so the second reuses the models of the first (or of an earlier session).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gap.cli import app
from gap.data import read_records
from gap.lab.loop import THETAS
from gap.lab.model import default_cache
from gap.lab.players import PlayLog
from gap.lab.world import QUESTION_TYPES

pytestmark = pytest.mark.slow

GAIN_KEYS = {"diff", "ci_low", "ci_high", "p_value", "n"}


def _run(out: Path, seed: int) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["lab", "run", "--size", "ci", "--out", str(out), "--seed", str(seed)])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("lab-seed-0")
    return out, _run(out, 0)


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
    trained = data["baselines"]["training_examples"]["theta-0.8"] > 0
    for gain in data["gain"].values():
        if trained:
            _check_gain(gain)
        else:
            assert gain is None
    assert [row["theta"] for row in data["theta_sweep"]] == list(THETAS)
    kept = [row["kept"] for row in data["theta_sweep"]]
    assert kept == sorted(kept, reverse=True) and kept[0] > 0  # a higher theta keeps fewer
    for row in data["theta_sweep"]:
        assert set(row) >= {"theta", "kept", "precision", "gain"}
        if row["trained_on"]:
            _check_gain(row["gain"])
            assert 0 <= row["precision"] <= 1
    # every set that has examples is trained and scored; theta 0.8 may keep none at ci size (then
    # random and oracle, on its budget, and the cross-model run have nothing to train on)
    baselines, examples = data["baselines"], data["baselines"]["training_examples"]
    assert set(baselines) >= {"random", "unfiltered", "oracle"} and examples["theta-0"] > 0
    assert examples["replay"] == examples["theta-0.8"]  # ci replays one curriculum record per kept one
    for name, run in (("random", "random"), ("unfiltered", "theta-0"), ("oracle", "oracle")):
        if examples[run]:
            _check_gain(baselines[name])
        else:
            assert baselines[name] is None
    assert data["cross_model"]["family"] == "qwen2_5_vl"
    if examples["theta-0.8"]:
        _check_gain(data["cross_model"]["gain"])
    else:
        assert data["cross_model"]["gain"] is None and data["gain_weak"] is None
    kept_at_main = next(row["kept"] for row in data["theta_sweep"] if row["theta"] == 0.8)
    assert 0 <= data["kept_precision"] <= 1 if kept_at_main else data["kept_precision"] is None
    assert data["taint"]["n"]["instructed_wrong"] > 0 and 0 <= data["taint"]["instructed_wrong"] <= 1
    assert set(data["fatigue"]) == {"fitted", "truth", "verdict_accuracy_by_image"}
    # the real game: every turn the players judged is a turn the server stored
    assert data["quality_fit"]["n_turns"] == data["turns"] > 0
    # whether each base model looks at the image, from its own answers to the test scenes
    assert set(data["image_use"]) == {"qwen2_vl", "qwen2_5_vl"}
    for by_type in data["image_use"].values():
        assert set(by_type) == set(QUESTION_TYPES)
        for row in by_type.values():
            figures = (row["varying"], row["score"], row["blind"])
            assert all(0 <= x <= 1 for x in figures) if row["questions"] else figures == (None,) * 3
        assert any(row["questions"] for row in by_type.values())
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "Theta sweep" in report and "taint instruction" in report and "use the image?" in report


def test_kept_sizes_and_precision_are_those_of_the_exports_against_the_truth(
    first: tuple[Path, dict[str, Any]],
) -> None:
    out, data = first
    log = PlayLog.read(out / "game" / "play.jsonl")
    right = {turn.turn_id: turn.model_right for turn in log.turns}
    for row in data["theta_sweep"]:
        folder = out / "exports" / f"db-theta-{row['theta']:g}"
        records = read_records(folder) if folder.exists() else []
        assert row["kept"] == len(records)
        if records:
            wrong = [not right[r.provenance.turn_ids[0]] for r in records]
            assert row["precision"] == round(sum(wrong) / len(wrong), 4)
    kept = [row["kept"] for row in data["theta_sweep"]]
    assert kept == sorted(kept, reverse=True)


def test_another_seed_changes_the_figures_and_reuses_the_base_models(
    first: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    _, data = first
    models = sorted(p.name for p in default_cache().iterdir() if not p.name.startswith("."))
    second = _run(tmp_path / "seed-1", 1)
    assert sorted(p.name for p in default_cache().iterdir() if not p.name.startswith(".")) == models
    assert second["base_models"] == data["base_models"]
    assert second["stages"]["base models (cached by recipe)"]["wall_s"] < 5
    assert second["turns"] != data["turns"] or second["theta_sweep"] != data["theta_sweep"]
    assert second["baselines"]["unfiltered"] != data["baselines"]["unfiltered"]  # always trained
    assert second["accuracy"]["base"] != data["accuracy"]["base"]  # fresh test scenes


REPEATED = (
    "turns",
    "quality_fit",
    "theta_sweep",
    "kept_precision",
    "gain",
    "gain_weak",
    "gain_adversarial",
    "baselines",
    "cross_model",
    "accuracy",
    "taint",
    "image_use",
)
"""Every figure of the report but times, latencies and the fatigue fit's standard errors (which, where
the data cannot identify a coefficient, move in their last digits with the order of the floats)."""


def test_the_same_seed_repeats_every_figure(first: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """The players play over HTTP, 12 sessions at a time, so their requests reach the server in a
    new order every run; `GAP_SEED`, the players' clock and content-ordered fits and training sets
    make what is played, kept, trained and scored the same."""
    _, data = first
    again = _run(tmp_path / "seed-0-again", 0)
    assert again["clock"]["cut_rounds"] == 0
    for key in REPEATED:
        assert again[key] == data[key], key
