"""Dataset cards: question-type mix, lengths, provenance, plots."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from gap.data import Record, card_stats, export_records, question_type, write_card
from gap.errors import InputError


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("How many people are wearing caps?", "counting"),
        ("Number of wheels visible in the image", "counting"),
        ("What colour is the bus?", "colour"),
        ("What is the color of the book?", "colour"),
        ("Where is the dog?", "position"),
        ("Which hand of the man is raised?", "position"),
        ("Is there a cat in the picture?", "existence"),
        ("Are any people wearing hats?", "existence"),
        ("What is written on the sign?", "text"),
        ("What is the time on the clock?", "text"),
        ("Why is the man smiling?", "other"),
    ],
)
def test_question_types(question: str, kind: str) -> None:
    assert question_type(question) == kind


def test_stats(records: list[Record]) -> None:
    stats = card_stats(records)
    assert stats["records"] == 6
    assert stats["images"] == 4
    assert stats["multi_turn"] == 1
    assert stats["players"] == 3
    assert stats["question_types"]["counting"] == 1
    assert sum(stats["question_types"].values()) == 6
    assert stats["reference_models"] == {"openai:reference": 6}
    assert stats["images_in_several_splits"] == 0


def test_card_is_written_with_plots(tmp_path: Path, records: list[Record]) -> None:
    out = tmp_path / "x"
    export_records(records, out, fmt="llava", manifest={"theta": 0.8})
    path = write_card(out)
    text = path.read_text()
    assert text.startswith("---\n")
    for needle in ("## Question types", "| counting | 1 |", "theta", "0.8", "openai:reference", "Players: 3"):
        assert needle in text
    for plot in ("question_types.png", "answer_lengths.png"):
        with Image.open(out / "card" / plot) as img:
            assert img.format == "PNG"
        assert f"card/{plot}" in text


def test_card_needs_an_export(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        write_card(tmp_path)
