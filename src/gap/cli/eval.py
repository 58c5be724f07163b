"""`gap eval`: answers on an evaluation set, the GPT score and offline metrics, comparisons.

torch and transformers load only inside `gap eval answer` with a `transformers:` model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from gap.cli._common import console, handle_errors, settings
from gap.errors import ConfigError

app = typer.Typer(
    help="Evaluate models: answer an evaluation set, score it, compare runs.", no_args_is_help=True
)

Metric = Annotated[
    str,
    typer.Option(
        help="gpt-score (a judge model), or an offline metric: exact-match, numeric (counting questions), "
        "yes-no (existence questions)."
    ),
]
JudgeModel = Annotated[
    str | None, typer.Option("--judge", help="Judge model name on the endpoint [GAP_JUDGE_MODEL].")
]
JudgeUrl = Annotated[
    str | None, typer.Option("--judge-base-url", help="Judge endpoint [GAP_JUDGE_BASE_URL].")
]
JudgeKey = Annotated[str | None, typer.Option("--judge-api-key", help="Judge API key [GAP_JUDGE_API_KEY].")]
WithQuestion = Annotated[
    bool, typer.Option(help="Show the judge the question too (prompt gap-vqa-v1-q, not the paper's).")
]
FailuresAsZero = Annotated[
    bool, typer.Option(help="Count unparsable replies and failed calls as 0 instead of leaving them out.")
]
Repeats = Annotated[int, typer.Option(min=1, help="Ask the judge K times per item; reports agreement.")]
Concurrency = Annotated[int, typer.Option(min=1, help="Judge (or HTTP model) requests in flight at once.")]
CachePath = Annotated[
    Path | None,
    typer.Option(help="Judge reply cache (SQLite). Default: <GAP_DATA_DIR>/eval/judge-cache.sqlite3."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")]
ImagesDir = Annotated[
    Path | None, typer.Option(help="Local images named like the GAP-VQA image URLs' file names.")
]
Split = Annotated[str | None, typer.Option(help="Only this split of a records or export folder.")]


def judge_setup(
    judge: str | None,
    base_url: str | None,
    api_key: str | None,
    cache: Path | None,
    *,
    with_question: bool,
    repeats: int,
    concurrency: int,
) -> Any:
    """The judge of the GPT score from options, then GAP_JUDGE_* settings; ``None`` without a model."""
    from gap.evaluate._score import JudgeSetup

    current = settings()
    model = judge or current.judge_model
    if model is None:
        return None
    return JudgeSetup(
        model=model,
        base_url=base_url or current.judge_base_url,
        api_key=api_key or current.judge_api_key,
        cache=cache or current.data_dir / "eval" / "judge-cache.sqlite3",
        with_question=with_question,
        repeats=repeats,
        concurrency=concurrency,
    )


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def print_report(report: dict[str, Any]) -> None:
    """The report as a table on stderr: overall, then each question type."""
    table = Table(title=f"{report['metric']}", title_justify="left")
    for column in ("", "score", "95% CI", "n", "failures"):
        table.add_column(column, justify="left" if not column else "right")
    rows = [("all", report), *report["by_type"].items()]
    for name, row in rows:
        ci = f"{_cell(row['ci_low'])} - {_cell(row['ci_high'])}"
        table.add_row(name, _cell(row["score"]), ci, str(row["n"]), str(row["failures"]))
    console.print(table)
    if report.get("failure_kinds"):
        kinds = ", ".join(f"{k} {v}" for k, v in report["failure_kinds"].items())
        note = "counted as 0" if report["failures_as_zero"] else "left out of the score"
        console.print(f"failures ({note}): {kinds}")
    if "judge" in report:
        j = report["judge"]
        reported = ", ".join(j["reported"]) or "-"
        console.print(
            f"judge {j['requested']} (server reports {reported}), prompt {j['prompt_version']} "
            f"#{j['prompt_hash']}; {j['calls']} calls, {j['cached']} cached replies"
        )
    if "agreement" in report:
        a = report["agreement"]
        console.print(
            f"judge agreement over repeats: {_cell(a['identical'])} of {a['items']} items identical, "
            f"mean |difference| {_cell(a['mean_abs_diff'])}"
        )
    if report.get("skipped"):
        console.print(f"{report['skipped']} items the metric does not apply to were skipped")


def write_scores(out: Path, report: dict[str, Any], results: list[Any]) -> None:
    """``<out>/score-<metric>.json`` and ``<out>/scores-<metric>.jsonl`` (one line per item)."""
    from gap.data._io import atomic_write_json

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / f"score-{report['metric']}.json", report)
    atomic_write_json(out / f"scores-{report['metric']}.jsonl", [r.to_dict() for r in results], lines=True)


@app.command("score")
@handle_errors
def score(
    source: Annotated[
        Path, typer.Argument(help="A gap eval RUN folder, JSON/JSONL items, or GAP-VQA val.json as it is.")
    ],
    judge: JudgeModel = None,
    judge_base_url: JudgeUrl = None,
    judge_api_key: JudgeKey = None,
    metric: Metric = "gpt-score",
    with_question: WithQuestion = False,
    failures_as_zero: FailuresAsZero = False,
    repeats: Repeats = 1,
    concurrency: Concurrency = 8,
    cache: CachePath = None,
    split: Split = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for the report and per-item scores (default: the RUN folder).")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Score answers: mean, image-clustered bootstrap 95% CI, n, failures, per question type."""
    from gap.evaluate import load_items

    items = load_items(source, split=split)
    setup = judge_setup(
        judge,
        judge_base_url,
        judge_api_key,
        cache,
        with_question=with_question,
        repeats=repeats,
        concurrency=concurrency,
    )
    target = out or (source if source.is_dir() else None)
    score_and_report(items, source, target, metric, setup, failures_as_zero=failures_as_zero, as_json=as_json)


def score_and_report(
    items: Any,
    source: Path,
    target: Path | None,
    metric: str,
    setup: Any,
    *,
    failures_as_zero: bool,
    as_json: bool,
) -> None:
    """Score ``items``, keep the report and per-item scores in ``target``, and print the report."""
    from gap.evaluate._score import score_items

    report, results = score_items(
        items, metric=metric, judge=setup, failures_as_zero=failures_as_zero, show_progress=not as_json
    )
    report["source"] = str(source)
    if target is not None:
        write_scores(target, report, results)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        print_report(report)


ModelSpec = Annotated[
    str, typer.Option("--model", help="transformers:<folder or hub id> (batched), or openai:<name> (HTTP).")
]
Adapter = Annotated[Path | None, typer.Option(help="A LoRA adapter folder (gap train output).")]
DataSet = Annotated[
    Path, typer.Option("--data", help="An export or records folder, JSON/JSONL items, or GAP-VQA val.json.")
]
BatchSize = Annotated[int, typer.Option(min=1, help="Items per generate call (local models).")]
MaxNewTokens = Annotated[int | None, typer.Option(help="Longest answer in tokens [GAP_MAX_NEW_TOKENS].")]


def answer_run(
    model: str,
    adapter: Path | None,
    data: Path,
    out: Path,
    *,
    split: str | None,
    images_dir: Path | None,
    batch_size: int,
    concurrency: int,
    max_new_tokens: int | None,
    show_progress: bool,
) -> Any:
    """Answer ``data`` into the RUN folder ``out`` (resuming it); returns the AnswerResult."""
    from gap.evaluate import load_items
    from gap.evaluate._answer import LocalBatchAnswerer, answer_items, make_answerer, run_settings

    current = settings()
    items = load_items(data, split=split, images_dir=images_dir)
    tokens = max_new_tokens or current.max_new_tokens
    adapter_path = str(adapter) if adapter else None
    recorded = run_settings(
        model,
        adapter=adapter_path,
        max_new_tokens=tokens,
        batch_size=batch_size,
        concurrency=concurrency,
        source=data,
        split=split,
        items=len(items),
    )
    answerer = make_answerer(
        model, adapter=adapter_path, max_new_tokens=tokens, concurrency=concurrency, settings=current
    )
    # an HTTP model gets `concurrency` items at a time, all in flight together
    size = batch_size if isinstance(answerer, LocalBatchAnswerer) else concurrency
    result = answer_items(
        items, answerer, out, batch_size=size, settings=recorded, show_progress=show_progress
    )
    console.print(
        f"{result.answered} items answered, {result.skipped} already done, {result.failed} failed -> {out}"
    )
    return result


@app.command("answer")
@handle_errors
def answer(
    model: ModelSpec,
    data: DataSet,
    out: Annotated[Path, typer.Option(help="RUN folder (created, or resumed when it holds this run).")],
    adapter: Adapter = None,
    split: Split = None,
    images_dir: ImagesDir = None,
    batch_size: BatchSize = 16,
    concurrency: Concurrency = 8,
    max_new_tokens: MaxNewTokens = None,
) -> None:
    """Answer an evaluation set with a model (greedy); re-running resumes without repeating items."""
    answer_run(
        model,
        adapter,
        data,
        out,
        split=split,
        images_dir=images_dir,
        batch_size=batch_size,
        concurrency=concurrency,
        max_new_tokens=max_new_tokens,
        show_progress=True,
    )


@app.command("compare")
@handle_errors
def compare(
    runs: Annotated[
        list[Path], typer.Argument(help="RUN folders (or scores-*.jsonl files); the first is the baseline.")
    ],
    out: Annotated[
        Path | None, typer.Option(help="Folder for compare.md, compare.png and compare.json.")
    ] = None,
    metric: Annotated[
        str, typer.Option(help="Which scores to compare (the metric `gap eval score` used).")
    ] = "gpt-score",
    paper: Annotated[
        bool, typer.Option(help="Add the paper's GPT scores on GAP-VQA val as reference rows.")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Runs side by side: score, CI, paired bootstrap p-value vs the first run, per question type."""
    compare_and_report(runs, out=out, metric=metric, paper=paper, as_json=as_json)


def compare_and_report(
    runs: list[Path], *, out: Path | None, metric: str, paper: bool, as_json: bool
) -> dict[str, Any]:
    from gap.data._io import atomic_write_json, atomic_write_text
    from gap.evaluate._compare import bar_chart, compare_runs, load_run_scores, markdown_table

    report = compare_runs([load_run_scores(r, metric) for r in runs], paper=paper)
    report["metric"] = metric
    table = markdown_table(report)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "compare.md", table)
        atomic_write_json(out / "compare.json", report)
        bar_chart(report, out / "compare.png")
        console.print(f"wrote {out / 'compare.md'}, {out / 'compare.png'} and {out / 'compare.json'}")
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        typer.echo(table)
    return report


@app.command("run")
@handle_errors
def run(
    model: ModelSpec,
    data: DataSet,
    out: Annotated[Path, typer.Option(help="RUN folder (created, or resumed when it holds this run).")],
    adapter: Adapter = None,
    baseline: Annotated[
        Path | None, typer.Option(help="A scored RUN folder to compare with (paired p-value).")
    ] = None,
    judge: JudgeModel = None,
    judge_base_url: JudgeUrl = None,
    judge_api_key: JudgeKey = None,
    metric: Metric = "gpt-score",
    with_question: WithQuestion = False,
    failures_as_zero: FailuresAsZero = False,
    repeats: Repeats = 1,
    cache: CachePath = None,
    split: Split = None,
    images_dir: ImagesDir = None,
    batch_size: BatchSize = 16,
    concurrency: Concurrency = 8,
    max_new_tokens: MaxNewTokens = None,
) -> None:
    """Answer + score (+ compare with --baseline): "did my fine-tune help?" in one command."""
    from gap.evaluate import load_items
    from gap.evaluate._score import check_judge

    setup = judge_setup(
        judge,
        judge_base_url,
        judge_api_key,
        cache,
        with_question=with_question,
        repeats=repeats,
        concurrency=concurrency,
    )
    check_judge(metric, setup)  # before any answer is generated
    answer(model, data, out, adapter, split, images_dir, batch_size, concurrency, max_new_tokens)
    score_and_report(
        load_items(out), out, out, metric, setup, failures_as_zero=failures_as_zero, as_json=False
    )
    if baseline is not None:
        compare_and_report([baseline, out], out=out / "compare", metric=metric, paper=False, as_json=False)


@app.command("benchmarks")
@handle_errors
def benchmarks(
    model: ModelSpec,
    suite: Annotated[
        str, typer.Option(help="Comma-separated suites: mme,pope,mmbench,mmmu,textvqa,ocrbench,...")
    ],
    tool: Annotated[str, typer.Option(help="lmms-eval or vlmevalkit.")] = "lmms-eval",
    adapter: Adapter = None,
    out: Annotated[Path, typer.Option(help="Where the harness writes its results.")] = Path("benchmarks-out"),
    base_url: Annotated[str, typer.Option(help="The OpenAI-compatible server the harness asks.")] = (
        "http://127.0.0.1:8000/v1"
    ),
    lora_rank: Annotated[int, typer.Option(help="vLLM --max-lora-rank (at least the adapter's r).")] = 64,
    run_them: Annotated[
        bool, typer.Option("--run", help="Run the harness command (the server must be up).")
    ] = False,
) -> None:
    """Write the command lines that run benchmark suites for this model (and adapter); --run runs them."""
    import subprocess

    from gap.evaluate._benchmarks import plan_benchmarks

    if tool not in ("lmms-eval", "vlmevalkit"):
        raise ConfigError(f"unknown tool {tool!r}: lmms-eval or vlmevalkit")
    plan = plan_benchmarks(
        model,
        adapter=str(adapter) if adapter else None,
        suites=[s.strip() for s in suite.split(",") if s.strip()],
        tool=tool,  # type: ignore[arg-type]
        out=out,
        base_url=base_url,
        lora_rank=lora_rank,
    )
    for name, text in plan.files.items():
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).write_text(text, encoding="utf-8")
        console.print(f"wrote {name}")
    for command in plan.commands:
        typer.echo(command)
    if run_them:
        harness = plan.commands[-1].split("  #")[0]
        console.print(f"running: {harness}")
        code = subprocess.call(harness, shell=True)
        if code:
            raise typer.Exit(code)
        console.print(f"done: gap eval import-benchmarks {out}")


@app.command("import-benchmarks")
@handle_errors
def import_benchmarks_command(
    folder: Annotated[Path, typer.Argument(help="An lmms-eval --output_path or a VLMEvalKit --work-dir.")],
    out: Annotated[Path | None, typer.Option(help="Folder for benchmarks.md and benchmarks.json.")] = None,
    as_json: AsJson = False,
) -> None:
    """Parse lmms-eval / VLMEvalKit result files into one table: benchmark x model, with differences."""
    from gap.data._io import atomic_write_json, atomic_write_text
    from gap.evaluate._benchmarks import benchmarks_table, import_benchmarks

    results = import_benchmarks(folder)
    table = benchmarks_table(results)
    rows = [r.to_dict() for r in results]
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "benchmarks.md", table)
        atomic_write_json(out / "benchmarks.json", rows)
    typer.echo(json.dumps(rows, indent=2) if as_json else table)
