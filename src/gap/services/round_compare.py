"""v0, v1, ... across rounds (issue 14 point 5): each round's model on each round's held-out
adversarial questions, and whether a round's model fixed the previous one's errors without breaking
what it got right.

The questions of round k are the records of a `gap data export` (kept untainted Wrongs with a
reference answer, the players' corrections first) in its held-out split whose turns were collected
in round k. Every (questions, model) cell is answered through :mod:`gap.evaluate` (resumable RUN
folders) and scored as `gap eval score` scores; an item counts as right when its score is at least
``RIGHT_AT``. Consecutive models are compared item by item on the same questions: fixed (wrong ->
right), broken (right -> wrong), an exact McNemar test on those discordant pairs, and the paired
image-clustered bootstrap of the mean score difference.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scipy.stats import binomtest
from sqlalchemy.orm import Session, sessionmaker

from gap.config import Settings
from gap.db.engine import reading
from gap.db.models import CollectionRound
from gap.errors import InputError
from gap.evaluate import EvalItem, clustered_bootstrap, load_items, paired_bootstrap_p
from gap.evaluate._score import JudgeSetup, score_items
from gap.services.rounds import turn_ids_of_round

RIGHT_AT = 0.5
"""An item is right when its score is at least this (offline metrics score 0 or 1)."""


@dataclass(frozen=True)
class RoundModel:
    number: int
    model: str
    adapter: str | None


def round_models(factory: sessionmaker[Session], numbers: Sequence[int] | None) -> list[RoundModel]:
    """The rounds asked for (default: all), oldest first; an unknown number is an error."""
    with reading(factory) as db:
        rows = {r.id: RoundModel(r.id, r.model, r.adapter) for r in db.query(CollectionRound)}
    wanted = sorted(rows) if numbers is None else sorted(set(numbers))
    missing = [n for n in wanted if n not in rows]
    if missing:
        raise InputError(f"no round {missing[0]}: `gap rounds list` shows the rounds")
    if len(wanted) < 1:
        raise InputError("no rounds yet: open one with `gap rounds start`")
    return [rows[n] for n in wanted]


def held_out_questions(
    factory: sessionmaker[Session], data: Path, split: str, rounds: Sequence[RoundModel]
) -> dict[int, list[EvalItem]]:
    """Per round, the export's ``split`` records collected in that round (record ids are turn ids)."""
    items = load_items(data, split=split)
    found: dict[int, list[EvalItem]] = {}
    for r in rounds:
        in_round = turn_ids_of_round(factory, r.number)
        found[r.number] = [i for i in items if i.id in in_round]
    return found


def _right(score: float | None) -> bool:
    return score is not None and score >= RIGHT_AT


def compare_pair(
    first: Mapping[str, float | None], second: Mapping[str, float | None], clusters: Mapping[str, str]
) -> dict[str, Any]:
    """Two models' per-item scores on the same questions: fixed, broken, and paired tests.

    Items either model could not score (a failed answer or judge call) are left out of the pair.
    """
    ids = sorted(i for i in first if i in second and first[i] is not None and second[i] is not None)
    fixed = sum(not _right(first[i]) and _right(second[i]) for i in ids)
    broken = sum(_right(first[i]) and not _right(second[i]) for i in ids)
    a = [float(first[i] or 0.0) for i in ids]
    b = [float(second[i] or 0.0) for i in ids]
    mcnemar = binomtest(fixed, fixed + broken, 0.5).pvalue if fixed + broken else 1.0
    return {
        "n": len(ids),
        "fixed": fixed,
        "broken": broken,
        "kept_right": sum(_right(first[i]) and _right(second[i]) for i in ids),
        "still_wrong": sum(not _right(first[i]) and not _right(second[i]) for i in ids),
        "mcnemar_p": float(mcnemar),
        "mean_diff": (sum(b) - sum(a)) / len(ids) if ids else None,
        "paired_bootstrap_p": _num(paired_bootstrap_p(a, b, [clusters[i] for i in ids])) if ids else None,
    }


def _num(value: float) -> float | None:
    return None if value != value else float(value)  # NaN (one image only) -> None


def accuracy(scores: Mapping[str, float | None], clusters: Mapping[str, str]) -> dict[str, Any]:
    """The share of right items with an image-clustered bootstrap 95 % interval."""
    ids = sorted(i for i, s in scores.items() if s is not None)
    values = [1.0 if _right(scores[i]) else 0.0 for i in ids]
    if not ids:
        return {"n": 0, "failures": len(scores), "accuracy": None, "ci_low": None, "ci_high": None}
    interval = clustered_bootstrap(values, [clusters[i] for i in ids])
    return {
        "n": len(ids),
        "failures": len(scores) - len(ids),
        "accuracy": interval.mean,
        "ci_low": _num(interval.low),
        "ci_high": _num(interval.high),
    }


def compare_rounds(
    factory: sessionmaker[Session],
    settings: Settings,
    *,
    data: Path,
    out: Path,
    split: str = "val",
    numbers: Sequence[int] | None = None,
    metric: str = "exact-match",
    judge: JudgeSetup | None = None,
    batch_size: int = 16,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Answer and score every (round's questions x round's model) cell under ``out`` and report;
    writes ``rounds-compare.json`` and ``rounds-compare.md`` there."""
    from gap.evaluate._answer import answer_items, make_answerer, run_settings
    from gap.evaluate._items import read_answers

    rounds = round_models(factory, numbers)
    questions = held_out_questions(factory, data, split, rounds)
    if not any(questions.values()):
        raise InputError(
            f"{data} has no {split!r} records from rounds {', '.join(str(r.number) for r in rounds)}"
        )
    scores: dict[tuple[int, int], dict[str, float | None]] = {}
    clusters: dict[str, str] = {}
    for model in rounds:
        answerer = None
        for asked in rounds:
            items = questions[asked.number]
            if not items:
                continue
            clusters.update({i.id: i.image_id for i in items})
            run = out / "runs" / f"questions-{asked.number}-model-{model.number}"
            if answerer is None:  # loaded once per model, only when it has questions to answer
                answerer = make_answerer(
                    model.model,
                    adapter=model.adapter,
                    max_new_tokens=settings.max_new_tokens,
                    concurrency=8,
                    settings=settings,
                )
            described = run_settings(
                model.model,
                adapter=model.adapter,
                max_new_tokens=settings.max_new_tokens,
                batch_size=batch_size,
                concurrency=8,
                source=data,
                split=split,
                items=len(items),
            )
            answer_items(
                items, answerer, run, batch_size=batch_size, settings=described, show_progress=show_progress
            )
            _, results = score_items(
                read_answers(run), metric=metric, judge=judge, show_progress=show_progress
            )
            scored = {r.item.id: r.score for r in results}
            scores[(asked.number, model.number)] = {i.id: scored.get(i.id) for i in items}
    report: dict[str, Any] = {
        "metric": metric,
        "right_at": RIGHT_AT,
        "data": str(data),
        "split": split,
        "rounds": [{"number": r.number, "model": r.model, "adapter": r.adapter} for r in rounds],
        "questions": {str(n): len(items) for n, items in questions.items()},
        "cells": [],
        "pairs": [],
    }
    for asked in rounds:
        for model in rounds:
            cell = scores.get((asked.number, model.number))
            if cell is not None:
                report["cells"].append(
                    {"questions": asked.number, "model": model.number, **accuracy(cell, clusters)}
                )
        for before, after in itertools.pairwise(rounds):
            first, second = (
                scores.get((asked.number, before.number)),
                scores.get((asked.number, after.number)),
            )
            if first is not None and second is not None:
                report["pairs"].append(
                    {
                        "questions": asked.number,
                        "before": before.number,
                        "after": after.number,
                        **compare_pair(first, second, clusters),
                    }
                )
    out.mkdir(parents=True, exist_ok=True)
    (out / "rounds-compare.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "rounds-compare.md").write_text(markdown(report), encoding="utf-8")
    return report


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def markdown(report: Mapping[str, Any]) -> str:
    """The report as two Markdown tables: accuracy per cell, then fixed/broken per consecutive pair."""
    models = {
        r["number"]: r["model"] + (f" + {r['adapter']}" if r["adapter"] else "") for r in report["rounds"]
    }
    lines = [
        f"# Models across rounds ({report['metric']}, right at score >= {report['right_at']})",
        "",
        f"Held-out split `{report['split']}` of `{report['data']}`.",
        "",
        "| questions of round | model of round | n | accuracy | 95% CI | failures |",
        "|---|---|---|---|---|---|",
    ]
    for c in report["cells"]:
        interval = f"[{_pct(c['ci_low'])}, {_pct(c['ci_high'])}]" if c["ci_low"] is not None else "-"
        lines.append(
            f"| {c['questions']} | {c['model']}: {models[c['model']]} | {c['n']} | {_pct(c['accuracy'])} "
            f"| {interval} | {c['failures']} |"
        )
    lines += [
        "",
        "| questions of round | before -> after | n | fixed | broken | McNemar p | mean diff "
        "| paired bootstrap p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in report["pairs"]:
        diff = "-" if p["mean_diff"] is None else f"{p['mean_diff']:+.3f}"
        lines.append(
            f"| {p['questions']} | {p['before']} -> {p['after']} | {p['n']} | {p['fixed']} | {p['broken']} "
            f"| {_p(p['mcnemar_p'])} | {diff} | {_p(p['paired_bootstrap_p'])} |"
        )
    return "\n".join(lines) + "\n"
