"""`gap rounds`: open and inspect rounds of collection (which model is in the loop)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.orm import Session, sessionmaker

from gap.cli._common import console, database, handle_errors, settings
from gap.cli.eval import JudgeKey, JudgeModel, JudgeUrl, judge_setup
from gap.config import Settings
from gap.db.engine import transaction
from gap.errors import InputError, NotFound
from gap.services.game import utcnow
from gap.services.rounds import FooledRate, RoundStats, fooled_rates, round_stats, start_round

app = typer.Typer(help="Rounds of collection: the model in the loop, round by round.", no_args_is_help=True)
stdout = Console(soft_wrap=False)


FooledOption = Annotated[
    bool,
    typer.Option(
        "--fooled",
        help="Also fit the reliability model (GAP_QUALITY_*, all rounds' turns) and show each round's "
        "model-fooled rate: kept untainted Wrongs per untainted question, with a 95% interval.",
    ),
]


def _row(stats: RoundStats, fooled: dict[int, FooledRate] | None) -> dict[str, Any]:
    row = asdict(stats)
    row["started_at"] = stats.started_at.isoformat()
    if fooled is not None:
        rate = fooled.get(stats.number)
        row["fooled"] = None if rate is None else {k: v for k, v in asdict(rate).items() if k != "number"}
    return row


def _fooled(factory: sessionmaker[Session], current: Settings, wanted: bool) -> dict[int, FooledRate] | None:
    if not wanted:
        return None
    from gap.services.admin import fit_quietly

    with console.status("fitting the reliability model on every judged turn"):
        fit = fit_quietly(factory, current)
    return {} if fit is None else fooled_rates(fit.turns, fit.p_wrong, current.theta)


def _fooled_text(row: dict[str, Any]) -> str:
    rate = row.get("fooled")
    if not rate:
        return "-"
    return f"{rate['rate']:.1%} [{rate['low']:.1%}, {rate['high']:.1%}] ({rate['kept']}/{rate['questions']})"


@app.command("start")
@handle_errors
def start(
    model: Annotated[
        str, typer.Option(help="Model spec, as GAP_MODEL: transformers:<folder> or openai:<name>.")
    ],
    adapter: Annotated[
        str | None, typer.Option(help="LoRA adapter folder (`gap train` output) on a transformers: model.")
    ] = None,
    note: Annotated[str | None, typer.Option(help="A free note, e.g. what the model was tuned on.")] = None,
) -> None:
    """Open a new round: new sessions, on every replica, play against its model.

    Sessions already running finish on the model they started with."""
    factory = database(settings(), expect_data=False)
    with transaction(factory) as db:
        row = start_round(db, model=model, adapter=adapter, note=note, now=utcnow())
        number = row.id
    label = f"{model} + {adapter}" if adapter else model
    console.print(f"round {number} started: {escape(label)}")


@app.command("list")
@handle_errors
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON array instead.")] = False,
    fooled: FooledOption = False,
) -> None:
    """Every round with its model and what was collected in it."""
    current = settings()
    factory = database(current, expect_data=False)
    with transaction(factory) as db:
        rows = round_stats(db)
    rates = _fooled(factory, current, fooled)
    if as_json:
        typer.echo(json.dumps([_row(r, rates) for r in rows], indent=2))
        return
    table = Table(box=box.SIMPLE)
    names = ["round", "model", "adapter", "started", "sessions", "judged", "untainted wrong"]
    for name in names + (["model fooled (95% CI)"] if fooled else []):
        table.add_column(name, overflow="fold")
    for r in rows:
        cells = [
            str(r.number),
            escape(r.model),
            escape(r.adapter or "-"),
            r.started_at.strftime("%Y-%m-%d %H:%M"),
            str(r.sessions),
            str(r.judged),
            f"{r.untainted_wrong}/{r.untainted_judged}",
        ]
        table.add_row(*cells, *([_fooled_text(_row(r, rates))] if fooled else []))
    stdout.print(table)
    typer.echo(f"{len(rows)} round(s)" + (f"; current: {rows[-1].number}" if rows else ""))


@app.command("show")
@handle_errors
def show(
    number: Annotated[int, typer.Argument(help="The round number (from `gap rounds list`).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead.")] = False,
    fooled: FooledOption = False,
) -> None:
    """One round: its model, adapter, note and what was collected in it."""
    current = settings()
    factory = database(current, expect_data=False)
    with transaction(factory) as db:
        rows = round_stats(db)
    found = [r for r in rows if r.number == number]
    if not found:
        raise NotFound(f"no round {number}; `gap rounds list` shows them")
    row = _row(found[0], _fooled(factory, current, fooled))
    row["current"] = found[0] is rows[-1]
    if as_json:
        typer.echo(json.dumps(row, indent=2))
        return
    for key, value in row.items():
        text = _fooled_text(row) if key == "fooled" else value
        typer.echo(f"{key}: {'-' if text is None else text}")


@app.command("compare")
@handle_errors
def compare(
    data: Annotated[
        Path, typer.Option(help="A `gap data export` folder (its records.jsonl; record ids are turn ids).")
    ],
    out: Annotated[Path, typer.Option(help="Folder for the runs and rounds-compare.md/.json (resumable).")],
    rounds: Annotated[
        str | None, typer.Option(help="Comma-separated round numbers, e.g. 1,2; default: every round.")
    ] = None,
    split: Annotated[str, typer.Option(help="The export's held-out split.")] = "val",
    metric: Annotated[
        str | None,
        typer.Option(
            help="gpt-score (the judge), exact-match, numeric or yes-no; default: gpt-score when a judge "
            "is configured (--judge or GAP_JUDGE_MODEL), else exact-match."
        ),
    ] = None,
    judge: JudgeModel = None,
    judge_base_url: JudgeUrl = None,
    judge_api_key: JudgeKey = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Items per generate call (local models).")] = 16,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")] = False,
) -> None:
    """Each round's model on each round's held-out questions: accuracy, fixed and broken.

    For every (round's questions x round's model): accuracy with an image-clustered 95% CI; for
    consecutive models on the same questions: errors fixed (wrong -> right) and answers broken
    (right -> wrong), with McNemar's exact test and the paired bootstrap. See docs/rounds.md."""
    from gap.services.round_compare import compare_rounds

    current = settings()
    numbers = _numbers(rounds)
    setup = judge_setup(
        judge, judge_base_url, judge_api_key, None, with_question=False, repeats=1, concurrency=8
    )
    chosen = metric or ("gpt-score" if setup is not None else "exact-match")
    report = compare_rounds(
        database(current),
        current,
        data=data,
        out=out,
        split=split,
        numbers=numbers,
        metric=chosen,
        judge=setup,
        batch_size=batch_size,
        show_progress=not as_json,
    )
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    from gap.services.round_compare import markdown

    typer.echo(markdown(report))
    typer.echo(str(out / "rounds-compare.md"))


def _numbers(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"--rounds takes comma-separated round numbers, e.g. 1,2; got {text!r}") from None
