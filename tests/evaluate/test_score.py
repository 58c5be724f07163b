"""The GPT-score pipeline against a real scripted OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from evalhelpers import REPORTED_MODEL, ScriptedJudge, item, make_judge, reply_for
from fastapi import FastAPI
from typer.testing import CliRunner

from fixtures.models import OpenAIServer
from fixtures.server import LiveServer
from gap.cli import app as cli
from gap.evaluate import EvalItem, judge_prompt, load_items, parse_score
from gap.evaluate._score import JudgeSetup, score_items

VAL = Path("/work/shared/data/gap-vqa/val.json")


@pytest.fixture
def judge(live_server: Callable[[FastAPI], LiveServer]) -> Iterator[tuple[ScriptedJudge, str]]:
    scripted = make_judge(slow_seconds=2.0)
    server = live_server(scripted.app)
    yield scripted, f"{server.url}/v1"


def _setup(url: str, cache: Path, **kwargs: object) -> JudgeSetup:
    options: dict[str, object] = {"timeout": 0.5, "retries": 2, "backoff": 0.01, "concurrency": 4}
    options.update(kwargs)
    return JudgeSetup(model="gpt-4o", base_url=url, cache=cache, **options)  # type: ignore[arg-type]


def _mixed_items() -> list[EvalItem]:
    """Two items per image; known parsed scores 1, 0.5, 0.25, 0, 0.75, 1, 0.5, and four failures."""
    answers = [
        "@num:1", "@prose:0.5", "@num:0.25", "@num:0", "@prose:0.75", "@flaky", "@slow",
        "@garbage", "@num:7", "@down", "@ambiguous",
    ]  # fmt: skip
    return [item(i, a, image=f"img{i // 2}") for i, a in enumerate(answers)]


def test_the_authors_prompt_renders_exactly_as_their_script() -> None:
    prompt = judge_prompt()
    text = prompt.render("How many?", "Three cats.", "Two cats.")
    assert text.startswith("\nPlease evaluate the model's answer based on the following criteria")
    assert '1. **Correct Answer**: "Two cats."\n2. **Model Answer**: "Three cats."\n' in text
    assert text.endswith("Just return the score as a single number.\n")
    assert "How many?" not in text
    with_question = judge_prompt(with_question=True)
    assert '0. **Question**: "How many?"' in with_question.render("How many?", "a", "b")
    assert (prompt.version, with_question.version) == ("gap-vqa-v1", "gap-vqa-v1-q")
    assert prompt.hash != with_question.hash and len(prompt.hash) == 16


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("0.8", 0.8), (" 1 ", 1.0), ("0.5.", 0.5), ('{"score": 0.3}', 0.3), ("Score: 0.8", 0.8),
        ("I'd give it 0.7/1", 0.7), ("0.6 out of 1", 0.6), ("1.5", None), ("-0.2", None),
        ("between 0 and 1: 0.4", None), ("partially right", None), ("", None), ("true", None),
    ],
)  # fmt: skip
def test_parse_score(reply: str, expected: float | None) -> None:
    assert parse_score(reply) == expected


def test_score_mean_ci_failures_and_cache(judge: tuple[ScriptedJudge, str], tmp_path: Path) -> None:
    scripted, url = judge
    items = _mixed_items()
    report, results = score_items(items, judge=_setup(url, tmp_path / "cache.sqlite3"), resamples=500)
    parsed = [1.0, 0.5, 0.25, 0.0, 0.75, 1.0, 0.5]
    assert report["n"] == len(parsed) and report["failures"] == 4
    assert report["failure_kinds"] == {"unparsed": 3, "error": 1}
    assert report["score"] == pytest.approx(sum(parsed) / len(parsed), abs=1e-4)
    assert report["ci_low"] < report["score"] < report["ci_high"]
    assert report["ci_low"] >= 0.0 and report["ci_high"] <= 1.0
    assert [r.failure for r in results][7:] == ["unparsed", "unparsed", "error", "unparsed"]
    assert report["judge"]["reported"] == [REPORTED_MODEL] and report["judge"]["requested"] == "gpt-4o"
    # flaky: one 500 then success; slow: one timeout then success; down: 1 + 2 retries
    assert scripted.calls.count("@flaky") == 2 and scripted.calls.count("@slow") == 2
    assert scripted.calls.count("@down") == 3
    assert report["judge"]["calls"] == len(scripted.calls) == 8 + 2 + 2 + 3

    calls_before = len(scripted.calls)
    again, _ = score_items(items, judge=_setup(url, tmp_path / "cache.sqlite3"), resamples=500)
    # only the transport failure ("@down": 3 attempts) is asked again; every reply comes from the cache
    assert len(scripted.calls) - calls_before == 3
    assert again["judge"]["cached"] == 10
    assert {k: again[k] for k in ("score", "ci_low", "ci_high", "n")} == {
        k: report[k] for k in ("score", "ci_low", "ci_high", "n")
    }

    as_zero, _ = score_items(
        items, judge=_setup(url, tmp_path / "cache.sqlite3"), failures_as_zero=True, resamples=500
    )
    assert as_zero["n"] == len(items) and as_zero["failures"] == 4
    assert as_zero["score"] == pytest.approx(sum(parsed) / len(items), abs=1e-4)


def test_second_run_makes_zero_judge_calls(judge: tuple[ScriptedJudge, str], tmp_path: Path) -> None:
    scripted, url = judge
    items = [item(i, f"@num:{i / 10}") for i in range(11)]
    first, _ = score_items(items, judge=_setup(url, tmp_path / "c.sqlite3"), resamples=200)
    assert len(scripted.calls) == 11 and first["judge"]["calls"] == 11
    second, _ = score_items(items, judge=_setup(url, tmp_path / "c.sqlite3"), resamples=200)
    assert len(scripted.calls) == 11 and second["judge"]["calls"] == 0 and second["judge"]["cached"] == 11
    assert second["score"] == first["score"] == pytest.approx(0.5)
    # another prompt version is another cache entry
    score_items(items, judge=_setup(url, tmp_path / "c.sqlite3", with_question=True), resamples=200)
    assert len(scripted.calls) == 22


def test_concurrency_is_real_and_bounded(
    live_server: Callable[[FastAPI], LiveServer], tmp_path: Path
) -> None:
    scripted = make_judge(delay=0.5)
    url = f"{live_server(scripted.app).url}/v1"
    items = [item(i, f"@num:{i / 10}") for i in range(9)]
    report, _ = score_items(
        items, judge=_setup(url, tmp_path / "c.sqlite3", concurrency=3, timeout=10.0), resamples=100
    )
    assert report["n"] == 9 and scripted.max_in_flight == 3


def test_repeats_report_agreement(judge: tuple[ScriptedJudge, str], tmp_path: Path) -> None:
    scripted, url = judge
    items = [item(i, f"@num:{i / 4}") for i in range(5)]
    report, results = score_items(items, judge=_setup(url, tmp_path / "c.sqlite3", repeats=3), resamples=200)
    assert len(scripted.calls) == 15 and all(len(r.scores) == 3 for r in results)
    assert report["agreement"] == {"items": 5, "identical": 1.0, "mean_abs_diff": 0.0}


def test_gap_vqa_val_scored_as_it_is(judge: tuple[ScriptedJudge, str], tmp_path: Path) -> None:
    if not VAL.is_file():
        pytest.skip("the GAP-VQA val.json is not in shared/")
    _, url = judge
    items = load_items(VAL)
    assert len(items) == 1000 and len({i.id for i in items}) == 1000
    report, _ = score_items(items, judge=_setup(url, tmp_path / "c.sqlite3", concurrency=16), resamples=200)
    assert report["items"] == 1000 and report["n"] + report["failures"] == 1000
    expected_failures = sum(parse_score(reply_for(i.answer or "")) is None for i in items)
    assert report["failures"] == expected_failures > 0
    assert sum(row["n"] + row["failures"] for row in report["by_type"].values()) == 1000
    assert report["by_type"]["counting"]["n"] > report["by_type"]["colour"]["n"]


def test_cli_score_json(judge: tuple[ScriptedJudge, str], tmp_path: Path) -> None:
    _, url = judge
    source = tmp_path / "answers.jsonl"
    rows = [
        {
            "id": f"q{i}",
            "question": "Is there a dog?",
            "answer": a,
            "reference": "Yes.",
            "image": f"{i % 2}.jpg",
        }
        for i, a in enumerate(["@num:1", "@num:0", "@garbage", "@prose:0.5"])
    ]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["eval", "score", str(source), "--judge", "gpt-4o", "--judge-base-url", url, "--json"]
    args += ["--cache", str(tmp_path / "c.sqlite3"), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"score", "ci_low", "ci_high", "n", "failures", "by_type"} <= report.keys()
    assert (report["score"], report["n"], report["failures"]) == (0.5, 3, 1)
    assert report["by_type"]["existence"]["n"] == 3
    lines = (tmp_path / "out" / "scores-gpt-score.jsonl").read_text().splitlines()
    assert [json.loads(line)["failure"] for line in lines] == [None, None, "unparsed", None]


def test_cli_score_without_a_judge_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GAP_JUDGE_MODEL", raising=False)
    source = tmp_path / "a.json"
    source.write_text(json.dumps([{"question": "q", "answer": "a", "reference": "r"}]))
    result = CliRunner().invoke(cli, ["eval", "score", str(source)])
    assert result.exit_code == 1 and "--judge" in result.output


def test_a_tiny_model_served_by_transformers_serve_as_judge_fails_to_parse(
    openai_server: OpenAIServer, tmp_path: Path
) -> None:
    """The failure path end to end: gibberish judge replies are counted, reported and cached."""
    items = [item(i, f"There are {i} dogs.", image=f"img{i // 2}") for i in range(4)]
    setup = JudgeSetup(
        model=openai_server.model,
        base_url=openai_server.base_url,
        cache=tmp_path / "c.sqlite3",
        timeout=120.0,
    )
    report, results = score_items(items, judge=setup, resamples=100)
    assert report["n"] + report["failures"] == 4 and report["failure_kinds"].get("unparsed", 0) >= 3
    assert report["judge"]["calls"] == 4 and all(
        r.replies and r.failure in (None, "unparsed") for r in results
    )
    again, _ = score_items(items, judge=setup, resamples=100)
    assert again["judge"]["calls"] == 0 and again["failures"] == report["failures"]
