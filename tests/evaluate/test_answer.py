"""gap eval answer: batched local answers equal one-at-a-time ones, and an interrupted run resumes."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from PIL import Image
from typer.testing import CliRunner

from fixtures.server import LiveServer
from gap.cli import app as cli
from gap.errors import GapError, InputError
from gap.evaluate import ANSWERS_FILE, RUN_FILE, EvalItem, load_items, read_answers
from gap.evaluate._answer import LocalBatchAnswerer, answer_items, run_settings

QUESTIONS = ["How many dogs are there?", "What colour is the car on the left?", "Is there a cat?"]


@pytest.fixture
def eval_set(tmp_path: Path) -> Path:
    """Ten JSONL items on small images of different sizes and colours (so prompts differ in length)."""
    rows = []
    for i in range(10):
        image = tmp_path / f"img{i}.png"
        Image.new("RGB", (20 + 3 * i, 32), (25 * i, 120, 200 - 15 * i)).save(image)
        question = QUESTIONS[i % 3] + (" Look closely." if i % 2 else "")
        rows.append({"id": f"q{i}", "question": question, "reference": "Two.", "image": str(image)})
    path = tmp_path / "set.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class Counting:
    """Wraps an answerer and records every item id it is asked about."""

    def __init__(self, inner: LocalBatchAnswerer) -> None:
        self.inner = inner
        self.asked: list[str] = []

    @property
    def name(self) -> str:
        return self.inner.name

    def answer_batch(self, items: Sequence[EvalItem]) -> list[str | GapError]:
        self.asked += [i.id for i in items]
        return self.inner.answer_batch(items)


def _settings(model: str, source: Path, items: int, batch_size: int) -> dict[str, Any]:
    return run_settings(
        model,
        adapter=None,
        max_new_tokens=8,
        batch_size=batch_size,
        concurrency=1,
        source=source,
        split=None,
        items=items,
    )


def test_batched_answers_equal_one_at_a_time(tiny_vlm_dir: Path, eval_set: Path, tmp_path: Path) -> None:
    items = load_items(eval_set)
    answerer = LocalBatchAnswerer(str(tiny_vlm_dir), max_new_tokens=8)
    spec = f"transformers:{tiny_vlm_dir}"
    answer_items(items, answerer, tmp_path / "one", batch_size=1, settings=_settings(spec, eval_set, 10, 1))
    answer_items(items, answerer, tmp_path / "batch", batch_size=4, settings=_settings(spec, eval_set, 10, 4))
    one = {i.id: i.answer for i in read_answers(tmp_path / "one")}
    batched = {i.id: i.answer for i in read_answers(tmp_path / "batch")}
    assert len(one) == 10 and all(one.values())
    assert batched == one
    assert len(set(one.values())) > 1  # the prompts really differ


def test_interrupted_run_resumes_without_repeating(
    tiny_vlm_dir: Path, eval_set: Path, tmp_path: Path
) -> None:
    items = load_items(eval_set)
    answerer = Counting(LocalBatchAnswerer(str(tiny_vlm_dir), max_new_tokens=8))
    spec = f"transformers:{tiny_vlm_dir}"
    run = tmp_path / "run"

    def stop_after_two_batches(done: int) -> None:
        if done >= 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        answer_items(
            items,
            answerer,
            run,
            batch_size=3,
            settings=_settings(spec, eval_set, 10, 3),
            on_batch=stop_after_two_batches,
        )
    assert len(read_answers(run)) == 6
    with (run / ANSWERS_FILE).open("a") as sink:
        sink.write('{"id": "q6", "quest')  # a write the interruption cut short
    result = answer_items(items, answerer, run, batch_size=4, settings=_settings(spec, eval_set, 10, 4))
    assert (result.answered, result.skipped) == (4, 6)
    assert sorted(answerer.asked) == sorted(i.id for i in items)  # each item asked exactly once
    lines = (run / ANSWERS_FILE).read_text().splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == sorted(i.id for i in items)
    recorded = json.loads((run / RUN_FILE).read_text())
    assert recorded["decoding"]["greedy"] is True and len(recorded["data"]["hash"]) == 16
    again = answer_items(items, answerer, run, batch_size=4, settings=_settings(spec, eval_set, 10, 4))
    assert again.answered == 0 and len(answerer.asked) == 10
    other = run_settings(
        spec,
        adapter=None,
        max_new_tokens=99,
        batch_size=4,
        concurrency=1,
        source=eval_set,
        split=None,
        items=10,
    )
    with pytest.raises(InputError, match="another model"):
        answer_items(items, answerer, run, batch_size=4, settings=other)


def test_cli_answer_with_a_lora_adapter(tiny_vlm_dir: Path, eval_set: Path, tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")
    import transformers

    model = transformers.AutoModelForImageTextToText.from_pretrained(tiny_vlm_dir)
    config = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    adapter = tmp_path / "adapter"
    peft.get_peft_model(model, config).save_pretrained(adapter)
    args = ["eval", "answer", "--model", f"transformers:{tiny_vlm_dir}", "--data", str(eval_set)]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "run"), "--adapter", str(adapter)])
    assert result.exit_code == 0, result.output
    recorded = json.loads((tmp_path / "run" / RUN_FILE).read_text())
    assert (
        recorded["adapter"] == str(adapter.resolve())
        and recorded["adapter_label"] == f"adapter@{recorded['adapter_hash']}"
    )
    assert recorded["decoding"]["batch_size"] == 16
    tuned = {i.id: i.answer for i in read_answers(tmp_path / "run")}
    base = LocalBatchAnswerer(str(tiny_vlm_dir), max_new_tokens=128).answer_batch(load_items(eval_set))
    assert len(tuned) == 10 and list(tuned.values()) != base  # the adapter is really applied


def test_an_unreadable_image_fails_alone(tiny_vlm_dir: Path, eval_set: Path, tmp_path: Path) -> None:
    items = load_items(eval_set)[:3]
    (tmp_path / "broken.png").write_bytes(b"not a png")
    items[1] = EvalItem("bad", "How many?", "Two.", str(tmp_path / "broken.png"), "bad")
    answers = LocalBatchAnswerer(str(tiny_vlm_dir), max_new_tokens=4).answer_batch(items)
    assert isinstance(answers[0], str) and isinstance(answers[2], str)
    assert isinstance(answers[1], InputError) and "not an image" in str(answers[1])


def test_http_model_answers_with_bounded_concurrency(
    live_server: Callable[[FastAPI], LiveServer], eval_set: Path, tmp_path: Path
) -> None:
    app = FastAPI()
    seen: list[str] = []

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        body = await request.json()
        parts = body["messages"][-1]["content"]
        assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
        seen.append(parts[1]["text"])
        return {"choices": [{"message": {"role": "assistant", "content": f"echo {parts[1]['text']}"}}]}

    server = live_server(app)
    env = {"GAP_OPENAI_BASE_URL": f"{server.url}/v1"}
    args = ["eval", "answer", "--model", "openai:echo", "--data", str(eval_set), "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(cli, [*args, "--concurrency", "3"], env=env)
    assert result.exit_code == 0, result.output
    answers = read_answers(tmp_path / "r")
    assert len(seen) == 10 and all(i.answer == f"echo {i.question}" for i in answers)


def test_cli_run_answers_scores_and_compares_with_a_baseline(
    live_server: Callable[[FastAPI], LiveServer], eval_set: Path, tmp_path: Path
) -> None:
    app = FastAPI()
    state = {"good": False}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        question = (await request.json())["messages"][-1]["content"][1]["text"]
        right = state["good"] or question.startswith("How many")
        return {"choices": [{"message": {"role": "assistant", "content": "Two." if right else "Blue."}}]}

    server = live_server(app)
    env = {"GAP_OPENAI_BASE_URL": f"{server.url}/v1"}
    common = ["eval", "run", "--model", "openai:m", "--data", str(eval_set), "--metric", "exact-match"]
    first = CliRunner().invoke(cli, [*common, "--out", str(tmp_path / "base")], env=env)
    assert first.exit_code == 0, first.output
    base = json.loads((tmp_path / "base" / "score-exact-match.json").read_text())
    assert (base["n"], base["score"]) == (10, 0.4)  # the 4 counting questions
    state["good"] = True
    args = [*common, "--out", str(tmp_path / "tuned"), "--baseline", str(tmp_path / "base")]
    second = CliRunner().invoke(cli, args, env=env)
    assert second.exit_code == 0, second.output
    compared = json.loads((tmp_path / "tuned" / "compare" / "compare.json").read_text())
    vs = compared["runs"][1]["vs_baseline"]
    assert (vs["shared"], vs["difference"]) == (10, 0.6) and vs["p_value"] < 0.05 and vs["p_wilcoxon"] < 0.05
