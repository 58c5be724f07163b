"""Validation catches each problem it claims to catch, and names the record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gap.data import Record, export_records, validate_export
from gap.data._validate import TokenCounter
from gap.errors import InputError


def load(path: Path) -> Any:
    return json.loads(path.read_text())


def save(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value))


def checks(directory: Path, **kwargs: Any) -> set[tuple[str, str]]:
    report = validate_export(directory, **kwargs)
    return {(p.record_id, p.check) for p in report.errors}


@pytest.mark.parametrize("fmt", ["llava", "sharegpt", "swift", "hf"])
def test_a_fresh_export_is_clean(tmp_path: Path, records: list[Record], fmt: str) -> None:
    export_records(records, tmp_path / fmt, fmt=fmt)  # type: ignore[arg-type]
    report = validate_export(tmp_path / fmt)
    assert report.ok and not report.problems
    assert report.records == len(records)
    assert report.format == fmt


def test_image_token_count(tmp_path: Path, records: list[Record]) -> None:
    export_records(records, tmp_path / "s", fmt="sharegpt")
    rows = load(tmp_path / "s" / "train.json")
    rows[0]["messages"][2 - 2]["content"] += " <image>"  # two tokens, one image
    rows[1]["messages"][0]["content"] = rows[1]["messages"][0]["content"].replace("<image>", "")
    save(tmp_path / "s" / "train.json", rows)
    found = checks(tmp_path / "s")
    assert found == {("r1", "image-tokens"), ("r2", "image-tokens")}


def test_llava_image_token_must_open_the_conversation(tmp_path: Path, records: list[Record]) -> None:
    export_records(records, tmp_path / "l", fmt="llava")
    rows = load(tmp_path / "l" / "train.json")
    conv = rows[2]["conversations"]
    conv[0]["value"] = conv[0]["value"].replace("<image>\n", "")
    conv[2]["value"] = "<image>\n" + conv[2]["value"]
    save(tmp_path / "l" / "train.json", rows)
    report = validate_export(tmp_path / "l")
    assert [(p.record_id, p.check) for p in report.errors] == [("r3", "image-tokens")]
    assert "first human turn" in report.errors[0].message


def test_hf_text_must_not_carry_placeholders(tmp_path: Path, records: list[Record]) -> None:
    datasets = pytest.importorskip("datasets")
    export_records(records, tmp_path / "h", fmt="hf")
    dd = datasets.load_from_disk(str(tmp_path / "h"))

    def add_token(row: dict[str, Any]) -> dict[str, Any]:
        if row["id"] == "r4":
            row["messages"][0]["content"] = "<image>" + row["messages"][0]["content"]
        return row

    dd = dd.map(add_token)
    dd.save_to_disk(str(tmp_path / "h2"))
    assert checks(tmp_path / "h2") == {("r4", "image-tokens")}


def test_missing_and_unreadable_images(tmp_path: Path, records: list[Record]) -> None:
    out = tmp_path / "w"
    export_records(records, out, fmt="swift")
    (out / "images" / "i0.png").unlink()  # r1 and r2
    (out / "images" / "i2.png").write_bytes(b"not a png")  # r4 and r5
    found = checks(out)
    assert found == {
        ("r1", "image-missing"),
        ("r2", "image-missing"),
        ("r4", "image-unreadable"),
        ("r5", "image-unreadable"),
    }


def test_empty_answers_questions_and_broken_structure(tmp_path: Path, records: list[Record]) -> None:
    export_records(records, tmp_path / "s", fmt="sharegpt")
    rows = load(tmp_path / "s" / "train.json")
    rows[0]["messages"][1]["content"] = "   "
    rows[2]["messages"][2]["content"] = ""
    rows[3]["messages"] = rows[3]["messages"][:1]  # no answer
    rows[4]["messages"] = "oops"
    save(tmp_path / "s" / "train.json", rows)
    found = checks(tmp_path / "s")
    assert found == {
        ("r1", "empty-answer"),
        ("r3", "empty-question"),
        ("r4", "structure"),
        ("r5", "structure"),
    }


def test_duplicate_ids_and_dataset_info(tmp_path: Path, records: list[Record]) -> None:
    export_records(records, tmp_path / "s", fmt="sharegpt")
    rows = load(tmp_path / "s" / "train.json")
    rows[1]["id"] = rows[0]["id"]
    save(tmp_path / "s" / "train.json", rows)
    (tmp_path / "s" / "dataset_info.json").write_text("{}")
    found = checks(tmp_path / "s")
    assert ("r1", "duplicate-id") in found
    assert ("-", "dataset-info") in found


def test_remote_images_are_warnings(tmp_path: Path, records: list[Record]) -> None:
    import dataclasses

    remote = [dataclasses.replace(r, image=f"https://example.org/{r.image_id}.jpg") for r in records]
    export_records(remote, tmp_path / "u", fmt="llava")
    report = validate_export(tmp_path / "u")
    assert report.ok
    assert {p.check for p in report.warnings} == {"image-remote"}


def test_records_folders_validate_too(tmp_path: Path, records: list[Record]) -> None:
    from gap.data import save_records

    save_records(records, tmp_path / "recs", manifest={"source": "test"})
    assert validate_export(tmp_path / "recs").ok
    Path(records[5].image).unlink()
    assert checks(tmp_path / "recs") == {("r6", "image-missing")}


@pytest.mark.parametrize("fmt", ["sharegpt", "hf"])
def test_too_long_samples_with_the_models_processor(
    tmp_path: Path, records: list[Record], tiny_vlm_dir: Path, fmt: str
) -> None:
    pytest.importorskip("transformers")
    export_records(records, tmp_path / "s", fmt=fmt)  # type: ignore[arg-type]
    counter = TokenCounter(str(tiny_vlm_dir))
    report = validate_export(
        tmp_path / "s", max_tokens=10_000, tokenizer=str(tiny_vlm_dir), counter_factory=lambda _: counter
    )
    assert report.ok
    # With the tiny model's processor the one-question records take about 45 tokens (image included)
    # and the two-question record about 72.
    found = checks(tmp_path / "s", max_tokens=60, tokenizer=str(tiny_vlm_dir))
    assert found == {("r3", "too-long")}


def test_token_count_includes_image_tokens(tmp_path: Path, records: list[Record], tiny_vlm_dir: Path) -> None:
    pytest.importorskip("transformers")
    from PIL import Image

    counter = TokenCounter(str(tiny_vlm_dir))
    text_only = [
        {"role": "user", "content": [{"type": "text", "text": "How many?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Two."}]},
    ]
    with_image = [
        {
            "role": "user",
            "content": [{"type": "image", "image": Image.new("RGB", (40, 30))}, text_only[0]["content"][0]],
        },
        text_only[1],
    ]
    assert counter.count(with_image) > counter.count(text_only) + 4


def test_bad_calls(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a folder"):
        validate_export(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="recognises"):
        validate_export(tmp_path / "empty")
    with pytest.raises(InputError, match="go together"):
        validate_export(tmp_path / "empty", max_tokens=10)
