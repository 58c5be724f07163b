"""`gap rounds compare`: each round's model on each round's held-out adversarial questions, with the
errors a later model fixed and what it broke (issue 14 point 5)."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from fixtures.game import login, seed_images
from gap.cli import app
from gap.config import Settings, get_settings
from gap.data import Message
from gap.data._records import iter_records, write_records
from gap.data._split import assign_splits
from gap.db.engine import make_engine, make_sessionmaker, reading
from gap.db.models import Round, Turn
from gap.evaluate import load_items, normalise
from gap.evaluate._answer import LocalBatchAnswerer
from gap.services.data import build_records
from gap.services.round_compare import accuracy, compare_pair
from gap.storage import LocalStore


def test_fixed_and_broken_are_counted_item_by_item() -> None:
    before = {"a": 0.0, "b": 0.0, "c": 1.0, "d": 1.0, "e": 0.0, "f": None}
    after = {"a": 1.0, "b": 1.0, "c": 0.0, "d": 1.0, "e": 0.0, "f": 1.0}
    clusters = {k: f"img{i % 3}" for i, k in enumerate(before)}
    pair = compare_pair(before, after, clusters)
    assert (pair["n"], pair["fixed"], pair["broken"], pair["kept_right"], pair["still_wrong"]) == (
        5,
        2,
        1,
        1,
        1,
    )
    assert pair["mcnemar_p"] == pytest.approx(1.0)  # 2 against 1 is no evidence
    assert pair["mean_diff"] == pytest.approx(1 / 5)
    many = compare_pair(
        {str(i): 0.0 for i in range(12)},
        {str(i): 1.0 for i in range(12)},
        {str(i): str(i) for i in range(12)},
    )
    assert many["fixed"] == 12 and many["mcnemar_p"] == pytest.approx(2 * 0.5**12)
    assert many["paired_bootstrap_p"] is not None
    share = accuracy({"a": 1.0, "b": 0.0, "c": 0.7, "d": None}, {"a": "1", "b": "2", "c": "3", "d": "4"})
    assert (share["n"], share["failures"], share["accuracy"]) == (3, 1, pytest.approx(2 / 3))
    assert 0.0 <= share["ci_low"] <= share["accuracy"] <= share["ci_high"] <= 1.0


def gap(settings: Settings, *args: str) -> Any:
    get_settings.cache_clear()
    env = {
        "GAP_DATA_DIR": str(settings.data_dir),
        "GAP_DATABASE_URL": settings.resolved_database_url,
        "GAP_MAX_NEW_TOKENS": "6",
    }
    return CliRunner().invoke(app, list(args), env=env)


def play_round(client: Any, names: list[str]) -> None:
    """Each player asks one question per picture and marks every answer Wrong, with a correction."""
    for name in names:
        auth = login(client, name)
        session = client.post("/api/sessions", headers=auth).json()
        for i in range(20):
            state = client.get(f"/api/sessions/{session['session_id']}", headers=auth).json()
            if state["status"] == "finished":
                break
            asked = client.post(
                f"/api/rounds/{state['round']['round_id']}/questions",
                headers=auth,
                json={"question": f"What is in the corner? ({name} {i})"},
            )
            assert asked.status_code == 201, asked.text
            verdict = {"verdict": "wrong", "correction": "A red square."}
            judged = client.post(f"/api/turns/{asked.json()['turn_id']}/verdict", headers=auth, json=verdict)
            assert judged.status_code == 200, judged.text


@pytest.mark.db
def test_v0_and_v1_across_two_rounds(
    settings: Settings, make_client: Any, tiny_model: Any, tiny_vlm_dir: Path, tmp_path: Path
) -> None:
    peft = pytest.importorskip("peft")
    import transformers

    # v1: the tiny model with a random LoRA adapter, so v0 and v1 answer differently
    base = transformers.AutoModelForImageTextToText.from_pretrained(tiny_vlm_dir)
    config = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    adapter = tmp_path / "adapter"
    peft.get_peft_model(base, config).save_pretrained(adapter)
    spec = f"transformers:{tiny_vlm_dir}"

    seed_images(settings, per_pool=3)
    client = make_client(tiny_model, rng=random.Random(4), max_new_tokens=6, session_images=6)
    assert gap(settings, "rounds", "start", "--model", spec).exit_code == 0
    play_round(client, ["Ada", "Bo"])
    assert gap(settings, "rounds", "start", "--model", spec, "--adapter", str(adapter)).exit_code == 0
    play_round(client, ["Cy", "Di"])

    # The export: every untainted Wrong with its correction (the filter is not what is tested here),
    # its held-out split by image.
    engine = make_engine(settings.resolved_database_url)
    factory = make_sessionmaker(engine)
    with reading(factory) as db:
        wrong = db.scalars(
            select(Turn.id)
            .join(Round, Round.id == Turn.round_id)
            .where(Round.pool == "untainted", Turn.verdict == "wrong")
        ).all()
    records, missing = build_records(
        factory, dict.fromkeys(wrong, 1.0), theta=0.8, images=LocalStore(settings.images_dir)
    )
    assert records and not missing
    export = tmp_path / "export"
    export.mkdir()
    write_records(export / "records.jsonl", assign_splits(records, {"val": 0.5}, seed=0))

    # References chosen so the outcome is known: on round 1's questions v1's own answer (v1 fixes what
    # v0 gets wrong), on round 2's v0's own answer (v1 breaks what v0 got right).
    items = load_items(export, split="val")
    v0 = LocalBatchAnswerer(str(tiny_vlm_dir), max_new_tokens=6).answer_batch(items)
    v1 = LocalBatchAnswerer(str(tiny_vlm_dir), adapter=str(adapter), max_new_tokens=6).answer_batch(items)
    answers = {i.id: (str(a), str(b)) for i, a, b in zip(items, v0, v1, strict=True)}
    with reading(factory) as db:
        round_of = dict(
            db.execute(select(Turn.id, Turn.collection_round).where(Turn.id.in_(list(answers)))).all()
        )
    engine.dispose()
    assert set(round_of.values()) == {1, 2}, "both rounds need held-out questions"

    def referenced(record: Any) -> Any:
        if record.id not in answers:
            return record
        reference = answers[record.id][1 if round_of[record.id] == 1 else 0]
        return dataclasses.replace(record, messages=(*record.messages[:-1], Message("assistant", reference)))

    write_records(export / "records.jsonl", [referenced(r) for r in iter_records(export)])
    differ = {
        n: sum(normalise(a) != normalise(b) for i, (a, b) in answers.items() if round_of[i] == n)
        for n in (1, 2)
    }
    sizes = {n: sum(1 for i in answers if round_of[i] == n) for n in (1, 2)}
    assert differ[1] + differ[2] > 0, "the adapter must change some answers"

    out = tmp_path / "compare"
    result = gap(
        settings, "rounds", "compare", "--data", str(export), "--out", str(out), "--rounds", "1,2", "--json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["metric"] == "exact-match" and report["questions"] == {"1": sizes[1], "2": sizes[2]}
    cells = {(c["questions"], c["model"]): c for c in report["cells"]}
    assert set(cells) == {(1, 1), (1, 2), (2, 1), (2, 2)}
    assert cells[(1, 2)]["accuracy"] == 1.0 and cells[(2, 1)]["accuracy"] == 1.0  # their own answers
    assert cells[(1, 1)]["accuracy"] == pytest.approx(1 - differ[1] / sizes[1])
    assert cells[(2, 2)]["accuracy"] == pytest.approx(1 - differ[2] / sizes[2])
    pairs = {p["questions"]: p for p in report["pairs"]}
    assert (pairs[1]["before"], pairs[1]["after"], pairs[1]["fixed"], pairs[1]["broken"]) == (
        1,
        2,
        differ[1],
        0,
    )
    assert (pairs[2]["fixed"], pairs[2]["broken"]) == (0, differ[2])
    markdown = (out / "rounds-compare.md").read_text()
    assert "| 1 | 1 -> 2 |" in markdown and json.loads((out / "rounds-compare.json").read_text()) == report

    # resumable: a second run over the same folder keeps its answers and reports the same
    again = gap(settings, "rounds", "compare", "--data", str(export), "--out", str(out), "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["cells"] == report["cells"]
    bad = gap(settings, "rounds", "compare", "--data", str(export), "--out", str(out), "--rounds", "1,7")
    assert bad.exit_code != 0 and "no round 7" in bad.output
