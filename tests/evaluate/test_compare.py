"""gap eval compare and the statistics under it, on constructed data with a known answer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from gap.cli import app as cli
from gap.evaluate import clustered_bootstrap, paired_bootstrap_p
from gap.evaluate._compare import compare_runs, load_run_scores


def _write_run(folder: Path, scores: Sequence[float | None], question_type: str = "counting") -> Path:
    folder.mkdir(parents=True)
    rows = [
        {
            "id": f"q{i}",
            "image_id": f"img{i // 2}",
            "type": question_type,
            "score": s,
            "failure": None if s is not None else "unparsed",
        }
        for i, s in enumerate(scores)
    ]
    (folder / "scores-gpt-score.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _swapped(values: np.ndarray, k: int) -> list[float]:
    """``values`` with ``k`` ones turned to 0 and ``k`` zeros turned to 1: same mean, paired noise."""
    out = values.copy()
    out[np.flatnonzero(values == 1)[:k]] = 0.0
    out[np.flatnonzero(values == 0)[-k:]] = 1.0
    return [float(v) for v in out]


def test_paired_p_rejects_about_five_percent_under_the_null() -> None:
    rng = np.random.default_rng(11)
    clusters = [str(i // 2) for i in range(200)]
    rejected = 0
    for seed in range(200):
        first = (rng.random(200) < 0.4).astype(float).tolist()
        second = (rng.random(200) < 0.4).astype(float).tolist()
        rejected += paired_bootstrap_p(first, second, clusters, resamples=400, seed=seed) < 0.05
    assert 0.01 <= rejected / 200 <= 0.11


def test_clustered_interval_is_wider_when_images_repeat_a_score() -> None:
    rng = np.random.default_rng(1)
    per_image = rng.random(50).round().tolist()
    values = [v for v in per_image for _ in range(4)]  # 4 identical items per image
    clustered = clustered_bootstrap(values, [str(i // 4) for i in range(200)], resamples=1000)
    naive = clustered_bootstrap(values, [str(i) for i in range(200)], resamples=1000)
    assert clustered.low < clustered.mean < clustered.high
    assert (clustered.high - clustered.low) > 1.5 * (naive.high - naive.low)


def test_paired_p_small_for_a_real_difference_and_not_for_none() -> None:
    rng = np.random.default_rng(7)
    base = (rng.random(300) < 0.3).astype(float)
    better = np.where(rng.random(300) < 0.35, 1.0, base)  # about +0.25
    clusters = [str(i // 3) for i in range(300)]
    assert paired_bootstrap_p(base.tolist(), better.tolist(), clusters, resamples=2000) < 0.01
    # disagreeing on 40 items, but as often up as down: no difference
    assert paired_bootstrap_p(base.tolist(), _swapped(base, 20), clusters, resamples=2000) > 0.5
    assert paired_bootstrap_p(base.tolist(), base.tolist(), clusters, resamples=500) == 1.0


def test_compare_runs_reports_differences_on_shared_items(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    base = (rng.random(200) < 0.3).astype(float).tolist()
    tuned = [1.0 if rng.random() < 0.4 else b for b in base]
    tuned[:5] = [None] * 5  # failures: left out of the paired comparison
    noise = _swapped(np.asarray(base), 15)
    runs = [
        load_run_scores(_write_run(tmp_path / "base", base)),
        load_run_scores(_write_run(tmp_path / "tuned", tuned)),
        load_run_scores(_write_run(tmp_path / "noise", noise)),
    ]
    report = compare_runs(runs, paper=True, resamples=1000)
    base_row, tuned_row, noise_row = report["runs"][:3]
    assert report["baseline"] == "base" and "vs_baseline" not in base_row
    assert tuned_row["failures"] == 5 and tuned_row["vs_baseline"]["shared"] == 195
    assert tuned_row["vs_baseline"]["difference"] > 0.2 and tuned_row["vs_baseline"]["p_value"] < 0.01
    assert noise_row["vs_baseline"]["difference"] == 0.0 and noise_row["vs_baseline"]["p_value"] > 0.5
    assert tuned_row["vs_baseline"]["p_wilcoxon"] < 0.01 < 0.5 < noise_row["vs_baseline"]["p_wilcoxon"]
    assert tuned_row["by_type"]["counting"]["vs_baseline"]["shared"] == 195
    paper_rows = [r for r in report["runs"] if r["reference"]]
    assert len(paper_rows) == 7 and all(
        r["name"].endswith("(paper)") and r["ci_low"] is None for r in paper_rows
    )


def test_cli_compare_writes_table_chart_and_json(tmp_path: Path) -> None:
    base = _write_run(tmp_path / "base", [0.0, 0.5, 1.0, 0.0] * 10)
    tuned = _write_run(tmp_path / "tuned", [1.0, 0.5, 1.0, 1.0] * 10)
    out = tmp_path / "cmp"
    result = CliRunner().invoke(cli, ["eval", "compare", str(base), str(tuned), "--out", str(out), "--paper"])
    assert result.exit_code == 0, result.output
    table = (out / "compare.md").read_text()
    assert "| tuned | 0.875 |" in table and "| GPT-4V (paper) | 0.637 | reference, no CI | - |" in table
    assert (out / "compare.png").read_bytes().startswith(b"\x89PNG")
    assert json.loads((out / "compare.json").read_text())["runs"][1]["vs_baseline"]["difference"] == 0.5
