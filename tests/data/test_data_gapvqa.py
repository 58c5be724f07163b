"""The authors' released GAP-VQA imports into records and round-trips through every exporter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datahelpers import write_png

from gap.data import (
    export_records,
    import_files,
    import_gap_vqa,
    read_records,
    save_records,
    split_file,
    validate_export,
)
from gap.errors import InputError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "gap-vqa"
TRAIN, VAL = SHARED / "train.json", SHARED / "val.json"

pytestmark = pytest.mark.skipif(not TRAIN.is_file(), reason="shared/data/gap-vqa is not present")


@pytest.fixture(scope="module")
def released() -> list:  # type: ignore[type-arg]
    return import_files([TRAIN, VAL])


def test_counts_in(released: list) -> None:  # type: ignore[type-arg]
    splits = [r.split for r in released]
    assert splits.count("train") == 2683
    assert splits.count("val") == 1000
    assert sum(1 for r in released if len(r.messages) > 2) == 156  # 136 four-turn + 20 six-turn


def test_no_placeholder_survives_in_record_text(released: list) -> None:  # type: ignore[type-arg]
    assert all("<image>" not in m.text for r in released for m in r.messages)
    assert all(m.text for r in released for m in r.messages)


def test_val_items_keep_the_model_answer_as_rejected() -> None:
    raw = json.loads(VAL.read_text())
    records = import_gap_vqa(VAL)
    assert records[0].question == raw[0]["question"]
    assert records[0].answer == raw[0]["correctAnswer"]
    assert records[0].rejected == raw[0]["modelAnswer"]
    assert records[0].image == raw[0]["imageLink"]
    assert records[0].image_id == "000000286204"


@pytest.mark.parametrize("fmt", ["llava", "sharegpt", "swift", "hf"])
def test_round_trip_counts_out(tmp_path: Path, released: list, fmt: str) -> None:  # type: ignore[type-arg]
    save_records(released, tmp_path / "recs", manifest={"source": "import:gap-vqa"})
    result = export_records(read_records(tmp_path / "recs"), tmp_path / fmt, fmt=fmt)  # type: ignore[arg-type]
    assert result.splits == {"train": 2683, "val": 1000}
    assert result.images_remote > 0 and result.images_local == 0
    report = validate_export(tmp_path / fmt)
    assert report.ok, report.errors[:3]
    assert report.records == 3683
    if fmt == "hf":
        return
    for split, expected in (("train", 2683), ("val", 1000)):
        path = tmp_path / fmt / split_file(fmt, split)
        rows = (
            [json.loads(line) for line in path.read_text().splitlines()]
            if fmt == "swift"
            else json.loads(path.read_text())
        )
        assert len(rows) == expected
        for row in rows:  # one placeholder per record, multi-turn included
            texts = (
                [t["value"] for t in row["conversations"]]
                if fmt == "llava"
                else [m["content"] for m in row["messages"]]
            )
            assert sum(t.count("<image>") for t in texts) == 1


def test_images_resolve_against_a_local_folder(tmp_path: Path) -> None:
    item = json.loads(TRAIN.read_text())[0]
    write_png(tmp_path / "coco" / Path(item["image"]).name, (1, 2, 3))
    records = import_gap_vqa(TRAIN, images_dir=tmp_path / "coco")
    local = [r for r in records if not r.image.startswith("https://")]
    assert [r.id for r in local] == [f"gapvqa-train-{item['id']}"]
    assert Path(local[0].image).is_file()


def test_multi_turn_placeholders_are_deduplicated(tmp_path: Path) -> None:
    data = [
        {
            "id": "7",
            "image": "https://example.org/a.jpg",
            "conversations": [
                {"role": "user", "content": "<image>\nHow many cats?"},
                {"role": "assistant", "content": "Two."},
                {"role": "user", "content": "<image>\nWhat colour?"},
                {"role": "assistant", "content": "Black."},
            ],
        }
    ]
    path = tmp_path / "train.json"
    path.write_text(json.dumps(data))
    [record] = import_gap_vqa(path)
    assert [m.text for m in record.messages] == ["How many cats?", "Two.", "What colour?", "Black."]
    export_records([record], tmp_path / "l", fmt="llava")
    row = json.loads((tmp_path / "l" / "train.json").read_text())[0]
    assert [t["value"].count("<image>") for t in row["conversations"]] == [1, 0, 0, 0]


def test_unknown_shapes_are_input_errors(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps([{"foo": 1}]))
    with pytest.raises(InputError, match="neither"):
        import_gap_vqa(path)
    path.write_text("{broken")
    with pytest.raises(InputError, match="not valid JSON"):
        import_gap_vqa(path)
    with pytest.raises(InputError, match="share record ids"):
        import_files([VAL, VAL])
