"""`gap quality`: fit the reliability model and filter, report on it, settle untainted points."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from gap.cli._common import console, database, handle_errors, settings
from gap.errors import InputError

app = typer.Typer(
    help="Player reliability, the theta filter, settled points and the player model.",
    no_args_is_help=True,
)


@contextmanager
def _stage(text: str) -> Iterator[None]:
    """A spinner with elapsed time for one long step."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        progress.add_task(text, total=None)
        yield


def _check_theta(theta: float) -> float:
    if not 0.0 < theta < 1.0:
        raise InputError(f"--theta must be in (0, 1), got {theta}")
    return theta


PiBy = Annotated[
    str | None,
    typer.Option(
        help="Prior of the model's error on untainted questions: auto (the player model of equation 5 "
        "when the table has elapsed_s and round_index), model, image or global "
        "(default: setting GAP_QUALITY_PI_BY)."
    ),
]
Group = Annotated[
    str | None,
    typer.Option(
        help="Combine players' verdicts on the same question: exact (same normalised text on one "
        "image), embedding (near-duplicates, needs the embeddings extra) or none "
        "(default: setting GAP_QUALITY_GROUP)."
    ),
]


@app.command("fit")
@handle_errors
def fit(
    turns: Annotated[
        Path,
        typer.Argument(
            help="Turns table (.csv or .parquet) with turn_id, from `gap turns export` or `gap simulate`."
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Folder for turns, players, images tables and summary.json.")
    ],
    theta: Annotated[
        float | None,
        typer.Option(
            help="Keep untainted Wrong verdicts with P(model wrong) >= theta (default: setting GAP_THETA)."
        ),
    ] = None,
    epsilon: Annotated[
        float | None,
        typer.Option(help="P(model wrong | tainted, not instructed) (default: setting GAP_QUALITY_EPSILON)."),
    ] = None,
    delta: Annotated[
        float | None,
        typer.Option(
            help="P(model right | tainted, instructed); must be < epsilon "
            "(default: setting GAP_QUALITY_DELTA)."
        ),
    ] = None,
    prior: Annotated[
        str | None,
        typer.Option(
            help="Population prior of player rates: grid (nonparametric) or beta "
            "(default: setting GAP_QUALITY_PRIOR)."
        ),
    ] = None,
    pi_by: PiBy = None,
    group: Group = None,
    alpha: Annotated[
        float, typer.Option(help="L2 strength on abilities and difficulties in the player model.")
    ] = 1.0,
    fatigue: Annotated[
        str,
        typer.Option(help="Fatigue counts images already played (images) or questions asked (questions)."),
    ] = "images",
    round_: Annotated[
        int | None,
        typer.Option(
            "--round",
            help="Fit only the turns of this round of collection (column collection_round); default: all.",
        ),
    ] = None,
) -> None:
    """Fit reliability, filter at theta, price untainted verdicts and fit the player model.

    Options left out take the GAP_QUALITY_* settings, which the dashboard, settlement and
    `gap data export` use too: with the same settings, all of them keep the same turns.
    """
    from gap.quality import PlayerModel
    from gap.quality._pipeline import fit_quality, output_format, read_turns
    from gap.quality._report import kept_by_hint_text
    from gap.services.quality import reliability_estimator
    from gap.services.rounds import turns_of_round

    current = settings()
    chosen = _check_theta(current.theta if theta is None else theta)
    fmt = output_format(turns)
    with _stage(f"reading {turns}"):
        table = read_turns(turns)
    if round_ is not None:
        table = turns_of_round(table, round_)
    overrides = {"epsilon": epsilon, "delta": delta, "prior": prior, "pi_by": pi_by, "group_questions": group}
    estimator = reliability_estimator(current).set_params(
        **{name: value for name, value in overrides.items() if value is not None}
    )
    model = PlayerModel(alpha=alpha, fatigue=fatigue, round_seconds=current.round_seconds)
    with _stage(f"fitting {len(table)} turns"):
        result = fit_quality(table, theta=chosen, estimator=estimator, player_model=model)
        paths = result.write(out, fmt)
    s = result.summary
    console.print(
        f"kept {s['n_kept']} of {s['n_candidates']} untainted Wrong verdicts at theta={chosen:.2f}; "
        f"pi={s['reliability']['pi']:.3f}"
    )
    hint_line = kept_by_hint_text(s["kept_by_hint"])
    if hint_line:
        console.print(hint_line)
    for path in paths:
        typer.echo(str(path))


@app.command("report")
@handle_errors
def report(
    folder: Annotated[Path, typer.Argument(help="Output folder of `gap quality fit`.")],
) -> None:
    """Print a short summary and write reliability, posterior, kept-rate and ability plots (PNG)."""
    from gap.quality._report import render_report

    with _stage("drawing plots"):
        result = render_report(folder)
    typer.echo(result.text)
    for path in result.figures:
        typer.echo(str(path))


@app.command("settle")
@handle_errors
def settle(
    from_: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="Use the posteriors in this `gap quality fit` folder instead of fitting the database now.",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Show what would change without writing.")] = False,
) -> None:
    """Credit due players' finished sessions (GAP_SETTLE_*): idempotent, re-runs add only differences."""
    from gap.quality._pipeline import QualityResult
    from gap.services.quality import fit_database, settle_points
    from gap.services.worker import settle_policy

    factory = database(settings())
    if from_ is not None:
        posteriors = QualityResult.read(from_).turns
    else:
        with _stage("fitting the reliability model on the judged turns"):
            fit = fit_database(factory, settings())
        if fit is None:
            console.print("no judged turns: nothing to settle")
            return
        posteriors = fit.turns[["turn_id"]].assign(p_wrong=fit.p_wrong)
    with _stage("settling"):
        summary = settle_points(factory, posteriors, policy=settle_policy(settings()), dry_run=dry_run)
    verb = "would adjust" if dry_run else "adjusted"
    console.print(
        f"{summary.sessions} sessions of {summary.players} players due: {summary.candidates} Wrong turns, "
        f"{summary.settled} priced, {verb} {summary.adjusted} (change {summary.change:+.2f} points), "
        f"{summary.missing} without a posterior"
    )
