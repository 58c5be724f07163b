"""The canonical record: validation, stable JSON, atomic files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import gap.data
from gap.data import Message, Record, read_records, strip_image_tokens, write_records
from gap.errors import InputError


def test_public_names_are_exported() -> None:
    public = {name for name in dir(gap.data) if not name.startswith("_")} - {"annotations"}
    modules = {name for name in public if getattr(gap.data, name).__class__.__name__ == "module"}
    assert sorted(public - modules) == sorted(gap.data.__all__)
    assert gap.data.__all__ == sorted(
        gap.data.__all__, key=lambda n: (not n.isupper(), not n[0].isupper(), n)
    )


def test_json_round_trip_is_exact(records: list[Record]) -> None:
    for record in records:
        again = Record.from_dict(json.loads(record.to_json()))
        assert again == record


def test_json_form_is_stable(records: list[Record]) -> None:
    data = json.loads(records[0].to_json())
    assert list(data) == sorted(data)
    assert data["schema"] == 1
    assert data["messages"][-1] == {"role": "assistant", "text": "There are two dogs."}


@pytest.mark.parametrize(
    "messages",
    [
        (),
        (Message("user", "q"),),
        (Message("assistant", "a"), Message("user", "q")),
        (Message("user", "q"), Message("user", "q2")),
    ],
)
def test_record_refuses_bad_turn_structure(records: list[Record], messages: tuple[Message, ...]) -> None:
    with pytest.raises(InputError):
        dataclasses.replace(records[0], messages=messages)


def test_newer_schema_is_refused(records: list[Record]) -> None:
    data = records[0].to_dict() | {"schema": 99}
    with pytest.raises(InputError, match="schema"):
        Record.from_dict(data)


def test_write_is_atomic_and_read_resolves_relative_images(tmp_path: Path, records: list[Record]) -> None:
    path = tmp_path / "out" / "records.jsonl"
    relative = [dataclasses.replace(r, image="images/x.png") for r in records]
    assert write_records(path, relative) == len(records)
    assert [p.name for p in path.parent.iterdir()] == ["records.jsonl"]  # no temp file left behind
    back = read_records(path.parent)
    assert {r.image for r in back} == {str((path.parent / "images/x.png").resolve())}
    assert [r.id for r in back] == [r.id for r in records]


def test_unreadable_records_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text("{}\nnot json\n")
    with pytest.raises(InputError):
        read_records(path)
    path.write_text('{"schema": 1}\n')
    with pytest.raises(InputError, match="malformed"):
        read_records(path)


def test_strip_image_tokens() -> None:
    assert strip_image_tokens("<image>\nHow many?") == "How many?"
    assert strip_image_tokens("A <image> B") == "A B"
    assert strip_image_tokens("no token") == "no token"
