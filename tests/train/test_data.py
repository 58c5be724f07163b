"""Training data comes from the export's records after the `gap data validate` gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from trainhelpers import make_records

from gap.data import export_records, save_records
from gap.errors import InputError
from gap.train import load_training_data


@pytest.mark.parametrize("fmt", ["hf", "sharegpt", "llava", "swift"])
def test_every_export_format_gives_the_same_examples(tmp_path: Path, fmt: str) -> None:
    if fmt == "hf":
        pytest.importorskip("datasets")
    export_records(make_records(tmp_path / "src"), tmp_path / fmt, fmt=fmt)  # type: ignore[arg-type]
    data = load_training_data(tmp_path / fmt)
    assert data.format == fmt
    assert [e.id for e in data.train] == [f"r{i}" for i in range(6)]
    multi = data.train[2]
    assert multi.turns[2] == ("user", "Is there a bus on the left?")
    assert all(Path(e.image).is_file() for e in data.train)
    assert len(data.data_hash) == 64


def test_import_folders_and_val_splits(tmp_path: Path) -> None:
    records = make_records(tmp_path / "src", splits=("train", "val", "train", "train", "test", "train"))
    save_records(records, tmp_path / "imported", manifest={"source": "test"})
    data = load_training_data(tmp_path / "imported")
    assert [e.id for e in data.val] == ["r1"]
    assert data.ignored_splits == {"test": 1}
    assert len(data.train) == 4


def test_val_fraction_holds_out_whole_images(tmp_path: Path) -> None:
    export_records(make_records(tmp_path / "src"), tmp_path / "e", fmt="swift")
    data = load_training_data(tmp_path / "e", val_fraction=0.25, seed=1)
    assert data.val
    assert not {e.image_id for e in data.val} & {e.image_id for e in data.train}
    again = load_training_data(tmp_path / "e", val_fraction=0.25, seed=1)
    assert [e.id for e in again.val] == [e.id for e in data.val]


def test_a_failing_set_stops_with_the_validation_report(tmp_path: Path) -> None:
    export_records(make_records(tmp_path / "src"), tmp_path / "e", fmt="llava")
    rows = json.loads((tmp_path / "e" / "train.json").read_text())
    rows[0]["conversations"][0]["value"] = rows[0]["conversations"][0]["value"].replace("<image>", "")
    (tmp_path / "e" / "train.json").write_text(json.dumps(rows))
    (tmp_path / "e" / "images" / sorted(p.name for p in (tmp_path / "e" / "images").iterdir())[1]).unlink()
    with pytest.raises(InputError) as caught:
        load_training_data(tmp_path / "e")
    message = caught.value.message
    assert "fails `gap data validate`" in message
    assert "image-tokens" in message and "image-missing" in message
    assert "r0" in message


def test_a_folder_that_is_not_an_export(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a GAP export"):
        load_training_data(tmp_path)
