"""The `gap` command line: a thin Typer app; each command calls one function of one part."""

from __future__ import annotations

import typer

from gap.cli import (
    bot,
    data,
    db,
    demo,
    images,
    lab,
    models,
    quality,
    rounds,
    serve,
    simulate,
    train,
    turns,
    worker,
)
from gap.cli import eval as eval_cli

app = typer.Typer(
    help="GAP: Gamified Adversarial Prompting — collect VLM blind spots by playing a game.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(db.app, name="db")
app.add_typer(images.app, name="images")
app.add_typer(rounds.app, name="rounds")
app.add_typer(models.app, name="models")
app.add_typer(data.app, name="data")
app.add_typer(quality.app, name="quality")
app.add_typer(turns.app, name="turns")
app.add_typer(train.app, name="train")
app.add_typer(eval_cli.app, name="eval")
app.add_typer(lab.app, name="lab")
app.command("simulate")(simulate.simulate)
app.command("serve")(serve.serve)
app.command("worker")(worker.worker)
app.command("demo")(demo.demo)
app.command("bot")(bot.bot)


def main() -> None:
    app()
