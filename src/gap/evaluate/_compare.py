"""`gap eval compare`: runs side by side, with the paired bootstrap p-value of each difference.

Each run is read from the per-item scores `gap eval score` wrote (``scores-<metric>.jsonl`` in a RUN
folder, or that file itself). The first run is the baseline; every other run is compared with it on the
items both scored (failures left out of both), clustered by image; a Wilcoxon signed-rank p-value
(items as independent) is given beside it. The paper's GPT scores on GAP-VQA
val (METHOD.md section 8) can be added as reference rows: they have no interval and no items, and are
marked as such.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gap.data import QUESTION_TYPES
from gap.errors import InputError
from gap.evaluate._stats import DEFAULT_RESAMPLES, clustered_bootstrap, paired_bootstrap_p, wilcoxon_p

PAPER_GPT_SCORES: tuple[tuple[str, float], ...] = (
    ("GPT-4V", 0.637),
    ("MiniCPM-Llama3-V-2.5-8B", 0.147),
    ("MiniCPM-Llama3-V-2.5-8B + GAP", 0.477),
    ("Qwen2-VL-2B", 0.169),
    ("Qwen2-VL-2B + GAP", 0.285),
    ("Qwen2-VL-7B", 0.207),
    ("Qwen2-VL-7B + GAP", 0.250),
)


@dataclass(frozen=True)
class ScoredItem:
    score: float | None
    image_id: str
    type: str


@dataclass(frozen=True)
class RunScores:
    name: str
    items: dict[str, ScoredItem]


def load_run_scores(path: Path, metric: str = "gpt-score") -> RunScores:
    """Per-item scores of a RUN folder (``scores-<metric>.jsonl``) or of such a file."""
    path = Path(path)
    name = path.name
    if path.is_dir():
        path = path / f"scores-{metric}.jsonl"
    if not path.is_file():
        raise InputError(f"no per-item scores at {path}: run `gap eval score` on it first")
    items: dict[str, ScoredItem] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            items[str(row["id"])] = ScoredItem(row["score"], str(row["image_id"]), str(row["type"]))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InputError(f"{path}:{number}: not a per-item score ({exc})") from None
    return RunScores(name, items)


def _row(values: list[float], clusters: list[str], resamples: int, seed: int) -> dict[str, Any]:
    interval = clustered_bootstrap(values, clusters, resamples=resamples, seed=seed)
    return {"score": _num(interval.mean), "ci_low": _num(interval.low), "ci_high": _num(interval.high)}


def _num(value: float) -> float | None:
    return None if value != value else round(value, 4)


def _summary(run: RunScores, ids: Sequence[str] | None, resamples: int, seed: int) -> dict[str, Any]:
    chosen = [run.items[i] for i in (ids if ids is not None else run.items)]
    parsed = [s for s in chosen if s.score is not None]
    row = _row(
        [s.score for s in parsed if s.score is not None], [s.image_id for s in parsed], resamples, seed
    )
    return {**row, "n": len(parsed), "failures": len(chosen) - len(parsed)}


def _paired(
    base: RunScores, other: RunScores, qtype: str | None, resamples: int, seed: int
) -> dict[str, Any]:
    shared = [
        i
        for i, s in base.items.items()
        if s.score is not None
        and i in other.items
        and other.items[i].score is not None
        and (qtype is None or s.type == qtype)
    ]
    first = [base.items[i].score or 0.0 for i in shared]
    second = [other.items[i].score or 0.0 for i in shared]
    clusters = [base.items[i].image_id for i in shared]
    diff = (sum(second) - sum(first)) / len(shared) if shared else float("nan")
    p = (
        paired_bootstrap_p(first, second, clusters, resamples=resamples, seed=seed)
        if shared
        else float("nan")
    )
    return {
        "shared": len(shared),
        "difference": _num(diff),
        "p_value": _num(p),
        "p_wilcoxon": _num(wilcoxon_p(first, second)),
    }


def compare_runs(
    runs: Sequence[RunScores],
    *,
    paper: bool = False,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """Each run's score, CI, n, failures, per type, and vs the first run: difference and paired p-value."""
    if not runs:
        raise InputError("nothing to compare: name at least one run")
    if len({r.name for r in runs}) != len(runs):
        raise InputError("two runs share a folder name; rename one so the table can tell them apart")
    base = runs[0]
    rows = []
    for index, run in enumerate(runs):
        row: dict[str, Any] = {"name": run.name, "reference": False, **_summary(run, None, resamples, seed)}
        row["by_type"] = {}
        for qtype in QUESTION_TYPES:
            ids = [i for i, s in run.items.items() if s.type == qtype]
            if ids:
                row["by_type"][qtype] = _summary(run, ids, resamples, seed)
                if index:
                    row["by_type"][qtype]["vs_baseline"] = _paired(base, run, qtype, resamples, seed)
        if index:
            row["vs_baseline"] = _paired(base, run, None, resamples, seed)
        rows.append(row)
    if paper:
        rows += [
            {"name": f"{name} (paper)", "reference": True, "score": value, "ci_low": None, "ci_high": None}
            for name, value in PAPER_GPT_SCORES
        ]
    return {"baseline": base.name, "resamples": resamples, "runs": rows}


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown_table(report: dict[str, Any]) -> str:
    """The comparison as a Markdown table; reference rows say they come from the paper."""
    lines = [
        f"| run | score | 95% CI | n | failures | vs {report['baseline']} "
        "| p (paired bootstrap) | p (Wilcoxon) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["runs"]:
        if row["reference"]:
            lines.append(f"| {row['name']} | {_fmt(row['score'])} | reference, no CI | - | - | - | - | - |")
            continue
        vs = row.get("vs_baseline", {})
        diff = vs.get("difference")
        lines.append(
            f"| {row['name']} | {_fmt(row['score'])} | {_fmt(row['ci_low'])} - {_fmt(row['ci_high'])} "
            f"| {row['n']} | {row['failures']} | {'+' if diff and diff > 0 else ''}{_fmt(diff)} "
            f"| {_fmt(vs.get('p_value'))} | {_fmt(vs.get('p_wilcoxon'))} |"
        )
    lines += ["", "| run | " + " | ".join(QUESTION_TYPES) + " |", "|---|" + "---|" * len(QUESTION_TYPES)]
    for row in report["runs"]:
        if row["reference"]:
            continue
        cells = []
        for qtype in QUESTION_TYPES:
            part = row["by_type"].get(qtype)
            cells.append("-" if part is None else f"{_fmt(part['score'])} (n={part['n']})")
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(report: dict[str, Any], path: Path) -> Path:
    """A PNG of each run's score with its 95% CI as error bars; paper rows hatched, without bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["runs"]
    names = [r["name"] for r in rows]
    scores = [r["score"] or 0.0 for r in rows]
    low = [
        max(0.0, s - (r["ci_low"] if r["ci_low"] is not None else s))
        for s, r in zip(scores, rows, strict=True)
    ]
    high = [
        max(0.0, (r["ci_high"] if r["ci_high"] is not None else s) - s)
        for s, r in zip(scores, rows, strict=True)
    ]
    figure, axes = plt.subplots(figsize=(max(4.0, 1.2 * len(rows)), 3.6))
    bars = axes.bar(range(len(rows)), scores, yerr=[low, high], capsize=4, color="#4c72b0")
    for bar, row in zip(bars, rows, strict=True):
        if row["reference"]:
            bar.set_color("#cccccc")
            bar.set_hatch("//")
    axes.set_xticks(range(len(rows)), names, rotation=30, ha="right", fontsize=8)
    axes.set_ylim(0, 1)
    axes.set_ylabel("score (95% CI, clustered by image)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
