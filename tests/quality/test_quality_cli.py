"""`gap simulate`, `gap quality fit` and `gap quality report` through Typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import typer
from typer.testing import CliRunner

from gap.cli import quality
from gap.cli.simulate import simulate

runner = CliRunner()


def _simulate_app() -> typer.Typer:
    app = typer.Typer()
    app.command("simulate")(simulate)
    app.command("other")(lambda: None)  # two commands keep "simulate" as a named subcommand
    return app


def test_simulate_fit_report(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    res = runner.invoke(
        _simulate_app(),
        [
            "simulate",
            str(out),
            "--players",
            "40",
            "--images",
            "30",
            "--sessions",
            "200",
            "--seed",
            "3",
            "--format",
            "csv",
        ],
    )
    assert res.exit_code == 0, res.output
    assert (out / "turns.csv").is_file() and (out / "truth.csv").is_file()
    assert json.loads((out / "params.json").read_text())["random_state"] == 3

    fit = tmp_path / "fit"
    res = runner.invoke(quality.app, ["fit", str(out / "turns.csv"), "--out", str(fit), "--theta", "0.7"])
    assert res.exit_code == 0, res.output
    assert "kept" in res.output and "theta=0.70" in res.output
    turns = pd.read_csv(fit / "turns.csv")
    assert {"turn_id", "p_wrong", "kept"} <= set(turns.columns)
    assert json.loads((fit / "summary.json").read_text())["theta"] == 0.7

    res = runner.invoke(quality.app, ["report", str(fit)])
    assert res.exit_code == 0, res.output
    assert "GAP quality report" in res.output
    assert (fit / "posterior.png").is_file()


def test_same_seed_same_output(tmp_path: Path) -> None:
    for name in ("a", "b"):
        args = ["simulate", str(tmp_path / name), "--players", "10", "--images", "12", "--sessions", "20"]
        assert runner.invoke(_simulate_app(), args).exit_code == 0
    assert (tmp_path / "a" / "turns.parquet").read_bytes() == (tmp_path / "b" / "turns.parquet").read_bytes()


def test_errors_exit_1_with_one_line(tmp_path: Path) -> None:
    res = runner.invoke(quality.app, ["fit", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "error: " in res.output and "no such file" in res.output
    bad = tmp_path / "turns.csv"
    pd.DataFrame(
        {
            "turn_id": [1],
            "player_id": ["p"],
            "image_id": ["i"],
            "pool": ["x"],
            "instructed": [0],
            "verdict": ["wrong"],
        }
    ).to_csv(bad, index=False)
    res = runner.invoke(quality.app, ["fit", str(bad), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "'pool' has value 'x'" in res.output
    res = runner.invoke(quality.app, ["fit", str(bad), "--out", str(tmp_path / "o"), "--theta", "1.5"])
    assert res.exit_code == 1 and "--theta" in res.output
    res = runner.invoke(quality.app, ["report", str(tmp_path)])
    assert res.exit_code == 1 and "no summary.json" in res.output
    res = runner.invoke(_simulate_app(), ["simulate", str(tmp_path / "s"), "--format", "xml"])
    assert res.exit_code == 1 and "--format" in res.output


def test_report_on_a_small_table_prints_no_coefficients(tmp_path: Path) -> None:
    """Two players, two sessions (a fresh database): the player model cannot be identified, and the
    report says so instead of printing numbers like 'intercept -119.400 ± 17976921.307'."""
    from gap.quality import simulate as draw

    table = tmp_path / "turns.csv"
    draw(n_players=2, n_images=10, n_sessions=2, random_state=0).turns.to_csv(table, index=False)
    fit = tmp_path / "fit"
    res = runner.invoke(quality.app, ["fit", str(table), "--out", str(fit)])
    assert res.exit_code == 0, res.output
    model = json.loads((fit / "summary.json").read_text())["player_model"]
    assert model["identified"] is False and "too few verdicts" in model["not_identified"]
    assert pd.read_csv(fit / "players.csv")["ability"].isna().all()
    res = runner.invoke(quality.app, ["report", str(fit)])
    assert res.exit_code == 0, res.output
    assert "player model: not identifiable from these data (too few verdicts" in res.output
    assert "±" not in res.output
