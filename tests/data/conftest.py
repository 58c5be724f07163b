"""Records and image files for the data tests, built in a temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from datahelpers import COLOURS, make_record, write_png

from gap.data import Record


@pytest.fixture
def image_files(tmp_path: Path) -> list[Path]:
    return [write_png(tmp_path / "source-images" / f"img{i}.png", c) for i, c in enumerate(COLOURS)]


@pytest.fixture
def records(image_files: list[Path]) -> list[Record]:
    """Six records on four images: one multi-turn, two images with two records each."""
    return [
        make_record("r1", image_files[0], "i0", [("How many dogs are there?", "There are two dogs.")]),
        make_record(
            "r2", image_files[0], "i0", [("What colour is the car?", "The car is red.")], players=("p2",)
        ),
        make_record(
            "r3",
            image_files[1],
            "i1",
            [
                ("What is in the picture?", "A street."),
                ("Is there a bus on the left?", "No, there is no bus."),
            ],
        ),
        make_record("r4", image_files[2], "i2", [("What does the sign say?", "It says STOP.")]),
        make_record("r5", image_files[2], "i2", [("Where is the cat?", "Under the table.")], players=("p3",)),
        make_record("r6", image_files[3], "i3", [("Is the sky cloudy?", "Yes, it is overcast.")]),
    ]
