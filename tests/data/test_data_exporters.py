"""Each exporter is a pure function from a record to one row of its consumer's schema (golden files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gap.data import Record, dataset_info_entry, hf_row, llava_row, sharegpt_row, swift_row

GOLDEN = Path(__file__).parent / "golden"


def golden(name: str) -> Any:
    return json.loads((GOLDEN / name).read_text())


@pytest.fixture
def multi_turn(records: list[Record]) -> Record:
    return records[2]


@pytest.mark.parametrize(
    ("builder", "name"),
    [
        (llava_row, "llava.json"),
        (sharegpt_row, "sharegpt.json"),
        (swift_row, "swift.json"),
        (hf_row, "hf.json"),
    ],
)
def test_rows_match_golden_files(multi_turn: Record, builder: Any, name: str) -> None:
    assert builder(multi_turn, "images/i1.png") == golden(name)


def test_llava_has_one_image_token_in_the_first_human_turn(multi_turn: Record) -> None:
    row = llava_row(multi_turn, "images/i1.png")
    values = [turn["value"] for turn in row["conversations"]]
    assert values[0].startswith("<image>\n")
    assert sum(v.count("<image>") for v in values) == 1
    assert [turn["from"] for turn in row["conversations"]] == ["human", "gpt", "human", "gpt"]


def test_tagged_formats_have_as_many_tokens_as_images(multi_turn: Record) -> None:
    for row in (sharegpt_row(multi_turn, "a.png"), swift_row(multi_turn, "a.png")):
        assert sum(m["content"].count("<image>") for m in row["messages"]) == len(row["images"]) == 1


def test_hf_rows_leave_image_placeholders_to_the_collator(multi_turn: Record) -> None:
    row = hf_row(multi_turn, "x")
    assert all("<image>" not in m["content"] for m in row["messages"])


def test_dataset_info_entry_follows_llama_factory() -> None:
    assert dataset_info_entry("train.json") == golden("dataset_info_entry.json")
