"""`gap data`: reference answers, exports for fine-tuning, validation, import and dataset cards.

Each command parses its options, calls :mod:`gap.data` or :mod:`gap.services.data`, and prints a short
summary; a :class:`~gap.errors.GapError` becomes one red line and exit code 1. The reference model is
configured apart from the game's model, by the ``GAP_REFERENCE_*`` settings or options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from gap.cli._common import console, database, handle_errors, settings
from gap.data import (
    DEFAULT_THRESHOLD,
    FORMATS,
    Record,
    assign_splits,
    export_records_to,
    import_files,
    merge_near_duplicates,
    parse_split,
    push_to_hub,
    read_records,
    save_records,
    validate_export,
    write_card,
)
from gap.errors import GapError, InputError
from gap.storage import LocalStore, image_store, is_s3_url, s3_reader, s3_store

app = typer.Typer(help="Turn kept turns into fine-tuning data, and check it.", no_args_is_help=True)

ThetaOption = Annotated[
    float | None,
    typer.Option(
        "--theta",
        min=0.0,
        max=1.0,
        help="Keep untainted Wrong turns with P(model wrong) >= theta. Default: the theta setting.",
    ),
]


def _summary(title: str, rows: dict[str, object]) -> None:
    table = Table(title=title, show_header=False)
    for key, value in rows.items():
        table.add_row(key, str(value))
    console.print(table)


@app.command("references")
@handle_errors
def references(
    model: Annotated[
        str | None, typer.Option(help="Model name on the reference endpoint (default: GAP_REFERENCE_MODEL).")
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(
            help="Base URL of the OpenAI-compatible reference endpoint (default: GAP_REFERENCE_BASE_URL)."
        ),
    ] = None,
    theta: ThetaOption = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight at most.")] = 4,
    retries: Annotated[int, typer.Option(min=0, help="Retries per question after a failure or timeout.")] = 2,
    backoff: Annotated[float, typer.Option(min=0.0, help="Seconds before the first retry (doubles).")] = 1.0,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Ask at most this many questions in this run.")
    ] = None,
) -> None:
    """Give every kept turn a reference answer: the player's correction, else the reference model's.

    Resumable: answers are stored as they arrive and never asked again; failures are retried on the
    next run. Exits 1 when some questions still have no answer.
    """
    from gap.models.openai_backend import OpenAIModel
    from gap.services.data import fill_references, kept_turns

    current = settings()
    factory = database(current)
    kept = kept_turns(factory, current, theta=theta)
    model = model or current.reference_model
    base_url = base_url or current.reference_base_url
    reference = None
    if model and base_url:
        reference = OpenAIModel(
            model,
            base_url=base_url,
            api_key=current.reference_api_key,
            timeout=current.reference_timeout,
            max_new_tokens=current.reference_max_new_tokens,
        )
    report = fill_references(
        factory,
        reference,
        list(kept),
        images=image_store(current, check=True),
        concurrency=concurrency,
        retries=retries,
        backoff=backoff,
        limit=limit,
        show_progress=True,
    )
    _summary(
        "reference answers",
        {
            "kept turns": report.kept,
            "already answered": report.already,
            "from player corrections": report.from_players,
            f"asked {reference.name if reference else 'no model'}": report.asked,
            "answered": report.answered,
            "failed": report.failed,
        },
    )
    for turn_id, error in list(report.failures.items())[:10]:
        console.print(f"[yellow]failed[/yellow] turn {turn_id}: {escape(str(error))}")
    if report.failed:
        raise GapError(f"{report.failed} question(s) still have no reference answer; run again to retry them")


def _records_from_db(theta: float | None, round_: int | None) -> tuple[list[Record], dict[str, object]]:
    from gap.services.data import build_records, kept_turns
    from gap.services.rounds import turn_ids_of_round

    current = settings()
    value = current.theta if theta is None else theta
    factory = database(current)
    kept = kept_turns(factory, current, theta=value)
    if round_ is not None:  # the fit uses every round's turns; the export keeps this round's
        in_round = turn_ids_of_round(factory, round_)
        kept = {turn_id: p for turn_id, p in kept.items() if turn_id in in_round}
    records, missing = build_records(factory, kept, theta=value, images=image_store(current))
    if missing:
        console.print(
            f"[yellow]{len(missing)} kept turn(s) have no reference answer yet and are left out; "
            "run `gap data references`[/yellow]"
        )
    return records, {
        "source": "database",
        "theta": value,
        "round": round_,
        "missing_references": len(missing),
    }


@app.command("export")
@handle_errors
def export(
    fmt: Annotated[
        str, typer.Option("--format", "-f", help=f"Output format: {', '.join(FORMATS)}.", show_default=False)
    ],
    out: Annotated[
        str,
        typer.Option(
            "--out",
            "-o",
            help="Folder to write (created or replaced whole), or s3://bucket/prefix (uploaded once "
            "complete, export.json last).",
        ),
    ],
    theta: ThetaOption = None,
    split: Annotated[
        str | None,
        typer.Option(help="Split by image, e.g. val=0.1 (or val=0.1,test=0.1). Default: keep record splits."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split draw.")] = 0,
    records: Annotated[
        Path | None,
        typer.Option(
            help="Export these records (a records.jsonl or a folder with one) instead of the database."
        ),
    ] = None,
    fetch_images: Annotated[
        bool, typer.Option("--fetch-images", help="Download remote images into the export.")
    ] = False,
    dedup: Annotated[
        bool, typer.Option("--dedup", help="Merge near-duplicate questions on the same image first.")
    ] = False,
    dedup_threshold: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Cosine similarity at which two questions are merged.")
    ] = DEFAULT_THRESHOLD,
    name: Annotated[str, typer.Option(help="Dataset name (LLaMA-Factory registers <name>_<split>).")] = "gap",
    push: Annotated[
        str | None,
        typer.Option("--push-to-hub", help="Also upload an hf export to this Hub repo (owner/name)."),
    ] = None,
    round_: Annotated[
        int | None,
        typer.Option(
            "--round",
            help="Only kept turns of this round of collection (`gap rounds`); the fit still uses all.",
        ),
    ] = None,
) -> None:
    """Write the kept rounds (or imported records) as a fine-tuning set, with images and a manifest."""
    if round_ is not None and records is not None:
        raise InputError("--round selects turns in the database; it does not apply to --records")
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if push and fmt != "hf":
        raise InputError("--push-to-hub needs --format hf")
    current = settings()
    target = s3_store(out, current) if is_s3_url(out) else LocalStore(Path(out))
    if push and not isinstance(target, LocalStore):
        raise InputError("--push-to-hub needs a local --out folder")
    target.check()
    spec = parse_split(split) if split else {}
    if records is not None:
        items = read_records(records)
        if theta is not None:
            items = [r for r in items if r.provenance.posterior is None or r.provenance.posterior >= theta]
        provenance: dict[str, object] = {"source": f"records:{records}", "theta": theta}
    else:
        items, provenance = _records_from_db(theta, round_)
    before = len(items)
    if dedup:
        items = merge_near_duplicates(items, threshold=dedup_threshold)
    items = assign_splits(items, spec, seed=seed)
    result, location = export_records_to(
        target,
        items,
        fmt=fmt,
        name=name,
        fetch_images=fetch_images,
        manifest={
            **provenance,
            "split": split,
            "seed": seed,
            "dedup": {"enabled": dedup, "threshold": dedup_threshold, "merged": before - len(items)},
        },
        show_progress=True,
        read_object=s3_reader(current),
    )
    _summary(
        f"{fmt} export in {location}",
        {
            **{f"split {k}": v for k, v in result.splits.items()},
            "images copied": result.images_local,
            "remote image URLs": result.images_remote,
            "near-duplicates merged": before - len(items),
        },
    )
    if push:
        push_to_hub(result.out_dir, push)
        console.print(f"pushed to the Hub as {push}")


@app.command("validate")
@handle_errors
def validate(
    directory: Annotated[Path, typer.Argument(help="An export folder.", show_default=False)],
    max_tokens: Annotated[
        int | None, typer.Option(min=1, help="Longest sample allowed, in tokens (needs --tokenizer).")
    ] = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            help="Model folder (or hub id) whose processor counts the tokens, image tokens included."
        ),
    ] = None,
    show: Annotated[int, typer.Option(min=0, help="List at most this many problems.")] = 50,
) -> None:
    """Check an export before training; lists problems by record id and exits 1 on any error."""
    report = validate_export(directory, max_tokens=max_tokens, tokenizer=tokenizer, show_progress=True)
    if report.problems:
        table = Table("record", "split", "check", "problem", title=f"{len(report.problems)} problem(s)")
        for problem in report.problems[:show]:
            colour = "red" if problem.severity == "error" else "yellow"
            table.add_row(
                problem.record_id, problem.split, f"[{colour}]{problem.check}[/{colour}]", problem.message
            )
        console.print(table)
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(report.by_check().items())) or "none"
    console.print(
        f"{report.format} export, {report.records} records: {len(report.errors)} error(s), "
        f"{len(report.warnings)} warning(s) ({counts})"
    )
    if not report.ok:
        raise typer.Exit(1)


@app.command("import")
@handle_errors
def import_(
    files: Annotated[list[Path], typer.Argument(help="Files to import (e.g. train.json val.json).")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Records folder to write. Default: records/<file stems> in the data folder.",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="Input format: gap-vqa.")] = "gap-vqa",
    images_dir: Annotated[
        Path | None,
        typer.Option(help="Use local images from this folder, matched by the URL's file name."),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(help="Split name for all records (default: train for conversations, val for items)."),
    ] = None,
) -> None:
    """Import external data as GAP records, to export, validate, train and evaluate like game data."""
    if fmt != "gap-vqa":
        raise InputError(f"unknown import format {fmt!r}; supported: gap-vqa")
    items = import_files(files, images_dir=images_dir, split=split)
    if out is None:
        out = settings().data_dir / "records" / "-".join(dict.fromkeys(f.stem for f in files))
    save_records(items, out, manifest={"source": f"import:{fmt}", "files": [str(f) for f in files]})
    counts: dict[str, int] = {}
    for record in items:
        counts[record.split] = counts.get(record.split, 0) + 1
    _summary(
        f"imported into {out}",
        {
            **{f"split {k}": v for k, v in sorted(counts.items())},
            "multi-turn": sum(1 for r in items if len(r.messages) > 2),
            "local images": len({r.image for r in items if not r.image.startswith(("http://", "https://"))}),
        },
    )
    console.print(
        f"wrote {len(items)} record(s) to {escape(str(out.resolve()))}; "
        f"next: gap data export --records {escape(str(out))} --format FORMAT --out DIR"
    )


@app.command("card")
@handle_errors
def card(directory: Annotated[Path, typer.Argument(help="An export folder.", show_default=False)]) -> None:
    """Write README.md (a dataset card with counts, question types, lengths and provenance) and plots."""
    path = write_card(directory)
    console.print(f"wrote {path}")
