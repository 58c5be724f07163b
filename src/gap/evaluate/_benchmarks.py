"""Standard benchmarks through lmms-eval or VLMEvalKit, for the same model and adapter, and their results.

Neither harness loads a LoRA adapter reliably (lmms-eval wrappers take none; VLMEvalKit's maintainers
advise a merged checkpoint or an OpenAI API), so both are pointed at one OpenAI-compatible server: vLLM
serves the base model with the adapter under a name, and the harness asks that name. The suites
download their data, so GAP writes (and with ``--run`` runs) the command lines, and parses the result
files the harnesses write:

- lmms-eval: ``<output_path>/<model>/<date>_results.json`` with ``results: {task: {"metric,filter": x}}``;
- VLMEvalKit: ``<work_dir>/<model>/[<eval id>/]<model>_<dataset>_<suffix>.csv|json`` (``_acc.csv``,
  ``_score.csv``, ``_score.json``...), one row per split or a single row of named scores.
"""

from __future__ import annotations

import csv
import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gap.errors import ConfigError, InputError

Tool = Literal["lmms-eval", "vlmevalkit"]

# suite -> (lmms-eval task, VLMEvalKit dataset)
SUITES: dict[str, tuple[str, str]] = {
    "mme": ("mme", "MME"),
    "pope": ("pope", "POPE"),
    "mmbench": ("mmbench_en_dev", "MMBench_DEV_EN"),
    "mmmu": ("mmmu_val", "MMMU_DEV_VAL"),
    "textvqa": ("textvqa_val", "TextVQA_VAL"),
    "ocrbench": ("ocrbench", "OCRBench"),
    "realworldqa": ("realworldqa", "RealWorldQA"),
    "hallusionbench": ("hallusion_bench_image", "HallusionBench"),
    "mmvet": ("mmvet", "MMVet"),
    "llava-bench": ("llava_in_the_wild", "LLaVABench"),
    "docvqa": ("docvqa_val", "DocVQA_VAL"),
}


@dataclass(frozen=True)
class BenchmarkPlan:
    """Shell command lines to run, in order, and files to write first."""

    commands: tuple[str, ...]
    files: dict[str, str]


def _suites(names: Sequence[str]) -> list[tuple[str, str]]:
    unknown = [n for n in names if n not in SUITES]
    if unknown or not names:
        raise ConfigError(
            f"unknown suite(s) {', '.join(unknown) or '(none)'}: choose from {', '.join(SUITES)}"
        )
    return [SUITES[n] for n in names]


def plan_benchmarks(
    model: str,
    *,
    adapter: str | None,
    suites: Sequence[str],
    tool: Tool,
    out: Path,
    base_url: str = "http://127.0.0.1:8000/v1",
    api_key: str = "EMPTY",
    lora_rank: int = 64,
    name: str | None = None,
) -> BenchmarkPlan:
    """The command lines that evaluate ``model`` (+ ``adapter``) on ``suites`` with ``tool``.

    ``transformers:``/folder models are first served by vLLM under ``name`` (default ``gap-base``, or
    ``gap-<adapter folder>`` with ``--enable-lora``), so base and fine-tuned results land in folders of
    their own; an ``openai:NAME`` model is asked as it is served at ``base_url``.
    """
    chosen = _suites(suites)
    kind, _, target = model.partition(":")
    commands: list[str] = []
    if kind == "openai" and target:
        if adapter:
            raise ConfigError("an openai: model is served already: load the adapter on that server instead")
        served = target
    else:
        base = target if kind == "transformers" and target else model
        served = name or (f"gap-{Path(adapter).resolve().name}" if adapter else "gap-base")
        serve = ["vllm", "serve", base, "--port", str(_port(base_url))]
        if adapter:
            serve += [
                "--enable-lora",
                "--lora-modules",
                f"{served}={adapter}",
                "--max-lora-rank",
                str(lora_rank),
            ]
        else:
            serve += ["--served-model-name", served]
        commands.append(shlex.join(serve) + " &  # wait until /v1/models answers")
    files: dict[str, str] = {}
    env = f"OPENAI_API_BASE={shlex.quote(base_url)} OPENAI_API_KEY={shlex.quote(api_key)}"
    if tool == "lmms-eval":
        tasks = ",".join(task for task, _ in chosen)
        args = ["python", "-m", "lmms_eval", "--model", "openai_compatible"]
        args += ["--model_args", f"model_version={served}", "--tasks", tasks, "--batch_size", "1"]
        args += ["--log_samples", "--output_path", str(out)]
        commands.append(f"{env} {shlex.join(args)}")
    elif tool == "vlmevalkit":
        config = {
            "model": {
                served: {
                    "class": "GPT4V",
                    "model": served,
                    "api_base": base_url.rstrip("/") + "/chat/completions",
                    "key": api_key,
                    "temperature": 0,
                }
            },
            "data": {dataset: {} for _, dataset in chosen},
        }
        config_path = out / "vlmevalkit-config.json"
        files[str(config_path)] = json.dumps(config, indent=2) + "\n"
        args = ["python", "run.py", "--config", str(config_path), "--work-dir", str(out), "--api-nproc", "8"]
        commands.append(f"{env} {shlex.join(args)}  # in a VLMEvalKit checkout")
    else:
        raise ConfigError(f"unknown tool {tool!r}: lmms-eval or vlmevalkit")
    return BenchmarkPlan(tuple(commands), files)


def _port(base_url: str) -> int:
    match = re.search(r":(\d+)(/|$)", base_url.split("//", 1)[-1])
    return int(match.group(1)) if match else 8000


@dataclass(frozen=True)
class BenchmarkResult:
    tool: Tool
    model: str
    benchmark: str
    metric: str
    value: float

    def to_dict(self) -> dict[str, Any]:
        return {"tool": self.tool, "model": self.model, "benchmark": self.benchmark, "metric": self.metric,
                "value": self.value}  # fmt: skip


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value).strip().rstrip("%"))
    except ValueError:
        return None


def _lmms_eval(path: Path) -> list[BenchmarkResult]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        return []
    model = str(data.get("model_name") or path.parent.name)
    out: list[BenchmarkResult] = []
    for task, metrics in data["results"].items():
        if not isinstance(metrics, dict):
            continue
        for key, value in metrics.items():
            name, _, _filter = str(key).partition(",")
            number = _number(value)
            if name == "alias" or name.endswith("_stderr") or number is None:
                continue
            out.append(BenchmarkResult("lmms-eval", model, str(task), name, number))
    return out


_VLMEVAL_FILE = re.compile(r"^(?P<rest>.+_(?:acc|score))\.(?P<ext>csv|json)$")
_KNOWN_DATASETS = sorted((dataset for _, dataset in SUITES.values()), key=len, reverse=True)


def _dataset_and_suffix(rest: str) -> tuple[str, str]:
    """``MMVet_gpt-4-turbo_score`` -> (``MMVet``, ``gpt-4-turbo_score``): known names first."""
    for dataset in _KNOWN_DATASETS:
        if rest.startswith(dataset + "_"):
            return dataset, rest[len(dataset) + 1 :]
    dataset, _, suffix = rest.rpartition("_")
    return dataset, suffix


def _vlmevalkit(path: Path, model: str) -> list[BenchmarkResult]:
    match = _VLMEVAL_FILE.match(path.name)
    if match is None or not match.group("rest").startswith(model + "_"):
        return []
    dataset, suffix = _dataset_and_suffix(match.group("rest")[len(model) + 1 :])
    if not dataset:
        return []
    out: list[BenchmarkResult] = []
    if match.group("ext") == "json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return []
        if isinstance(data, dict):
            for key, value in data.items():
                number = _number(value)
                if number is not None:
                    out.append(BenchmarkResult("vlmevalkit", model, dataset, str(key), number))
        return out
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        split = row.pop("split", None) or row.pop("Split", None)
        row.pop("", None)  # pandas' index column
        for key, value in row.items():
            number = _number(value)
            if number is not None:
                metric = f"{split}/{key}" if split and len(rows) > 1 else str(key)
                out.append(BenchmarkResult("vlmevalkit", model, dataset, f"{metric} ({suffix})", number))
    return out


def import_benchmarks(folder: Path) -> list[BenchmarkResult]:
    """Every result in an lmms-eval ``--output_path`` or a VLMEvalKit ``--work-dir``, newest file winning."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"no such folder: {folder}")
    results: dict[tuple[str, str, str, str], BenchmarkResult] = {}
    for path in sorted(folder.rglob("*_results.json")):  # date-stamped names: later sorts last
        for result in _lmms_eval(path):
            results[(result.tool, result.model, result.benchmark, result.metric)] = result
    for model_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(model_dir.rglob("*"), key=lambda p: (len(p.relative_to(model_dir).parts) > 1, str(p)))
        for path in files:
            if path.is_file() and not path.name.endswith("_results.json"):
                for result in _vlmevalkit(path, model_dir.name):
                    results.setdefault((result.tool, result.model, result.benchmark, result.metric), result)
    if not results:
        raise InputError(f"{folder} holds no lmms-eval or VLMEvalKit result files")
    return list(results.values())


def benchmarks_table(results: Sequence[BenchmarkResult]) -> str:
    """A Markdown table: one row per (benchmark, metric), one column per model, difference to the first."""
    models = list(dict.fromkeys(r.model for r in results))
    keys = list(dict.fromkeys((r.tool, r.benchmark, r.metric) for r in results))
    value = {(r.tool, r.benchmark, r.metric, r.model): r.value for r in results}
    header = ["tool", "benchmark", "metric", *models] + ([f"{m} - {models[0]}" for m in models[1:]])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for tool, bench, metric in keys:
        cells = [value.get((tool, bench, metric, m)) for m in models]
        diffs = [f"{c - cells[0]:+.4g}" if c is not None and cells[0] is not None else "-" for c in cells[1:]]
        shown = ["-" if c is None else f"{c:.4g}" for c in cells]
        lines.append("| " + " | ".join([tool, bench, metric, *shown, *diffs]) + " |")
    return "\n".join(lines) + "\n"
