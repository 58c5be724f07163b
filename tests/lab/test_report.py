"""The report's image-use figures tell a model that looks at the image from one that does not."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from gap.lab import loop, world
from gap.lab.report import _blind_warning, image_use


def _scores(items: dict[str, dict[str, object]], answers: dict[str, str]) -> dict[str, float]:
    return {
        i: float(world.is_right(str(r["qtype"]), answers[i], str(r["reference"]))) for i, r in items.items()
    }


def test_a_model_that_answers_the_truth_uses_the_image_and_a_constant_one_does_not() -> None:
    scenes = world.draw_scenes(80, seed=3)
    items = {row["id"]: row for row in loop.test_items(scenes, Path("images"), seed=3)}
    assert max(Counter(str(row["question"]) for row in items.values()).values()) > 1
    truthful = {i: str(row["reference"]) for i, row in items.items()}
    constant = {i: "3" if row["qtype"] == "counting" else "yes" for i, row in items.items()}

    sighted, blind = (
        image_use(items, truthful, _scores(items, truthful)),
        image_use(items, constant, _scores(items, constant)),
    )
    assert sighted["existence"]["varying"] > 0.5
    for qtype in world.QUESTION_TYPES:
        if sighted[qtype]["questions"]:
            assert sighted[qtype]["score"] == 1.0 > sighted[qtype]["blind"]
            assert blind[qtype]["varying"] == 0.0 and blind[qtype]["score"] <= blind[qtype]["blind"]
    # the report opens with a warning for the blind model only
    assert _blind_warning({"image_use": {"qwen2_vl": blind}})
    assert _blind_warning({"image_use": {"qwen2_vl": sighted}}) == []


def test_the_blind_model_answers_each_text_with_its_commonest_truth() -> None:
    def item(n: int, question: str, truth: str) -> tuple[str, dict[str, object]]:
        return f"i{n}", {"question": question, "reference": truth, "qtype": "existence", "set": "test"}

    items = dict(
        [
            item(1, "Is there a red circle?", "yes"),
            item(2, "Is there a red circle?", "yes"),
            item(3, "Is there a red circle?", "no"),
            item(4, "Is there a blue square?", "no"),  # asked once: not counted
        ]
    )
    row = image_use(items, {}, {"i1": 1.0, "i2": 0.0, "i3": 0.0, "i4": 1.0})["existence"]
    assert row["blind"] == pytest.approx(round(2 / 3, 4))  # "yes" to the red circle: 2 of 3
    assert row["score"] == pytest.approx(round(1 / 3, 4)) and row["n"] == 3 and row["questions"] == 1
    assert row["varying"] == 0.0  # no answers given: all the same (none)
