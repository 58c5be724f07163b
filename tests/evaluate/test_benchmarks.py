"""gap eval benchmarks (command lines) and import-benchmarks (result files in the harnesses' layouts)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gap.cli import app as cli
from gap.errors import ConfigError
from gap.evaluate._benchmarks import benchmarks_table, import_benchmarks, plan_benchmarks


def test_lmms_eval_plan_serves_the_adapter_and_asks_it_by_name(tmp_path: Path) -> None:
    adapter = tmp_path / "run-42"
    plan = plan_benchmarks(
        "transformers:Qwen/Qwen2-VL-2B-Instruct", adapter=str(adapter), suites=["mme", "pope", "mmbench"],
        tool="lmms-eval", out=tmp_path / "out", lora_rank=8,
    )  # fmt: skip
    serve, harness = plan.commands
    assert shlex.split(serve.split("&")[0]) == [
        "vllm", "serve", "Qwen/Qwen2-VL-2B-Instruct", "--port", "8000", "--enable-lora",
        "--lora-modules", f"gap-run-42={adapter}", "--max-lora-rank", "8",
    ]  # fmt: skip
    words = shlex.split(harness)
    assert words[:2] == ["OPENAI_API_BASE=http://127.0.0.1:8000/v1", "OPENAI_API_KEY=EMPTY"]
    assert words[words.index("--model") + 1] == "openai_compatible"
    assert words[words.index("--model_args") + 1] == "model_version=gap-run-42"
    assert words[words.index("--tasks") + 1] == "mme,pope,mmbench_en_dev"
    assert plan.files == {}


def test_vlmevalkit_plan_writes_a_config_for_the_served_model(tmp_path: Path) -> None:
    plan = plan_benchmarks("openai:my-model", adapter=None, suites=["ocrbench", "mme"], tool="vlmevalkit",
                           out=tmp_path, base_url="http://10.0.0.2:9000/v1")  # fmt: skip
    (harness,) = plan.commands
    config = json.loads(plan.files[str(tmp_path / "vlmevalkit-config.json")])
    assert config["model"]["my-model"]["api_base"] == "http://10.0.0.2:9000/v1/chat/completions"
    assert config["model"]["my-model"]["temperature"] == 0
    assert list(config["data"]) == ["OCRBench", "MME"]
    assert "--config" in harness and str(tmp_path) in harness
    with pytest.raises(ConfigError, match="unknown suite"):
        plan_benchmarks("openai:m", adapter=None, suites=["nope"], tool="vlmevalkit", out=tmp_path)


def _lmms_results(folder: Path, model: str, date: str, mme: float, pope: float) -> None:
    """lmms-eval's layout: <output_path>/<model_name_sanitized>/<date>_results.json (+ samples files)."""
    target = folder / model
    target.mkdir(parents=True, exist_ok=True)
    results = {
        "results": {
            "mme": {
                "alias": "mme",
                "mme_perception_score,none": mme,
                "mme_perception_score_stderr,none": "N/A",
                "mme_cognition_score,none": 300.0,
                "mme_cognition_score_stderr,none": "N/A",
            },
            "pope": {"alias": "pope", "pope_accuracy,none": pope, "pope_accuracy_stderr,none": 0.01},
        },
        "group_subtasks": {"mme": [], "pope": []},
        "n-samples": {"mme": {"original": 2374, "effective": 2374}},
        "config": {"model": "openai_compatible", "model_args": f"model_version={model}", "batch_size": "1"},
        "model_name": model,
        "model_name_sanitized": model,
        "date": date,
    }  # fmt: skip
    (target / f"{date}_results.json").write_text(json.dumps(results, indent=2))
    (target / f"{date}_samples_mme.jsonl").write_text('{"doc_id": 0}\n')


def test_import_lmms_eval_results_newest_file_wins(tmp_path: Path) -> None:
    _lmms_results(tmp_path, "gap-base", "20260101_100000", 1200.0, 0.80)
    _lmms_results(tmp_path, "gap-base", "20260102_100000", 1250.0, 0.81)
    _lmms_results(tmp_path, "gap-run-42", "20260102_120000", 1300.5, 0.86)
    results = import_benchmarks(tmp_path)
    got = {(r.model, r.benchmark, r.metric): r.value for r in results}
    assert got[("gap-base", "mme", "mme_perception_score")] == 1250.0
    assert got[("gap-run-42", "pope", "pope_accuracy")] == 0.86
    assert not any("stderr" in metric or metric == "alias" for _, _, metric in got)
    table = benchmarks_table(results)
    assert "| lmms-eval | mme | mme_perception_score | 1250 | 1300 | +50.5 |" in table


def test_import_vlmevalkit_results(tmp_path: Path) -> None:
    """VLMEvalKit's layout: <work_dir>/<model>/<T{date}_G{commit}>/<model>_<dataset>_<suffix>."""
    for model, overall in (("gap-base", 0.70), ("gap-run-42", 0.74)):
        run = tmp_path / model / "T20260102_Gdeadbeef"
        run.mkdir(parents=True)
        (run / f"{model}_MMBench_DEV_EN_acc.csv").write_text(f"split,Overall,AR,CP\ndev,{overall},0.6,0.8\n")
        (run / f"{model}_POPE_score.csv").write_text(
            "split,Overall,acc,precision,recall\nOverall,85.1,86.0,88.2,83.5\nrandom,87.0,88.0,90.0,85.0\n"
        )
        (run / f"{model}_MME_score.csv").write_text("perception,reasoning,OCR\n1500.2,320.0,140.0\n")
        ocr = {"Text Recognition": 200, "Final Score": 700, "Final Score Norm": 70.0}
        (run / f"{model}_OCRBench_score.json").write_text(json.dumps(ocr))
        (run / f"{model}_MMVet_gpt-4-turbo_score.csv").write_text("Category,tot,acc\nOverall,218,55.2\n")
        (run / f"{model}_MME.xlsx").write_bytes(b"predictions, not results")
    results = import_benchmarks(tmp_path)
    got = {(r.model, r.benchmark, r.metric): r.value for r in results}
    assert got[("gap-run-42", "MMBench_DEV_EN", "Overall (acc)")] == 0.74
    assert got[("gap-base", "POPE", "random/acc (score)")] == 88.0
    assert got[("gap-base", "MME", "perception (score)")] == 1500.2
    assert got[("gap-base", "OCRBench", "Final Score")] == 700.0
    assert got[("gap-base", "MMVet", "acc (gpt-4-turbo_score)")] == 55.2
    assert {r.tool for r in results} == {"vlmevalkit"}


def test_cli_benchmarks_and_import(tmp_path: Path) -> None:
    args = ["eval", "benchmarks", "--model", "openai:m", "--suite", "mme,pope", "--tool", "vlmevalkit"]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "b" / "vlmevalkit-config.json").is_file() and "run.py" in result.stdout
    _lmms_results(tmp_path / "lmms", "gap-base", "20260101_100000", 1200.0, 0.80)
    result = CliRunner().invoke(cli, ["eval", "import-benchmarks", str(tmp_path / "lmms"), "--json"])
    assert result.exit_code == 0, result.output
    assert {"benchmark": "pope", "metric": "pope_accuracy", "value": 0.8}.items() <= json.loads(
        result.stdout
    )[-1].items()
    empty = CliRunner().invoke(cli, ["eval", "import-benchmarks", str(tmp_path / "b")])
    assert empty.exit_code == 1 and "no lmms-eval or VLMEvalKit result files" in empty.output
