"""Offline judges: each its own metric, with the items it does not apply to skipped."""

from __future__ import annotations

from pathlib import Path

import pytest
from evalhelpers import item

from gap.evaluate import EvalItem, load_items, normalise, offline_score, read_count
from gap.evaluate._score import score_items

VAL = Path("/work/shared/data/gap-vqa/val.json")


def test_normalise_and_counts() -> None:
    assert normalise("The Two dogs!") == normalise("2 dogs") == "2 dogs"
    assert read_count("There are three cats") == 3
    assert read_count("I see 12 birds and 3 cats") == 12
    assert read_count("There are no people") == 0
    assert read_count("A red car") is None


@pytest.mark.parametrize(
    ("question", "reference", "answer", "metric", "expected"),
    [
        ("How many dogs?", "Two dogs.", "I count 2 dogs", "numeric", 1.0),
        ("How many dogs?", "Two dogs.", "Three dogs.", "numeric", 0.0),
        ("How many dogs?", "Two dogs.", "I cannot tell.", "numeric", 0.0),
        ("How many dogs?", "Some dogs.", "Two", "numeric", None),
        ("What colour is it?", "Two dogs.", "Two", "numeric", None),
        ("Is there a cat in the image?", "No, there is not.", "No.", "yes-no", 1.0),
        ("Is there a cat in the image?", "Yes, on the sofa.", "No cat here.", "yes-no", 0.0),
        ("Is there a cat in the image?", "A cat sits there.", "Yes", "yes-no", None),
        ("What is it?", "A red car.", "red car", "exact-match", 1.0),
        ("What is it?", "A red car.", "a blue car", "exact-match", 0.0),
    ],
)
def test_offline_score(
    question: str, reference: str, answer: str, metric: str, expected: float | None
) -> None:
    target = EvalItem("x", question, reference, "i.jpg", "i", answer)
    assert offline_score(metric, target, answer) == expected  # type: ignore[arg-type]


def test_offline_metric_report_labels_and_skips() -> None:
    items = [item(0, "two dogs"), item(1, "3 dogs"), item(2, "x", question="What is this?")]
    report, _ = score_items(items, metric="numeric", resamples=100)
    assert report["metric"] == "numeric" and "judge" not in report
    assert (report["n"], report["skipped"], report["score"]) == (2, 1, 0.5)


def test_val_json_offline_metrics_cover_every_item_once() -> None:
    if not VAL.is_file():
        pytest.skip("the GAP-VQA val.json is not in shared/")
    items = load_items(VAL)
    for metric in ("exact-match", "numeric", "yes-no"):
        report, _ = score_items(items, metric=metric, resamples=100)
        assert report["n"] + report["failures"] + report.get("skipped", 0) == 1000
