"""`gap data` in-process: import, export from records, validate, card, and clean errors."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from gap.cli.data import app
from gap.data import Record, save_records

runner = CliRunner()


def test_help_lists_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("references", "export", "validate", "import", "card"):
        assert command in result.output


def test_import_export_validate_card(tmp_path: Path) -> None:
    data = [
        {
            "id": "1",
            "image": "https://example.org/a.jpg",
            "conversations": [
                {"role": "user", "content": "<image>\nHow many cats?"},
                {"role": "assistant", "content": "Two cats."},
            ],
        }
    ]
    val = [
        {
            "imageLink": "https://example.org/b.jpg",
            "question": "Colour?",
            "modelAnswer": "Red",
            "correctAnswer": "Blue.",
        }
    ]
    (tmp_path / "train.json").write_text(json.dumps(data))
    (tmp_path / "val.json").write_text(json.dumps(val))
    recs = tmp_path / "recs"
    result = runner.invoke(
        app, ["import", str(tmp_path / "train.json"), str(tmp_path / "val.json"), "--out", str(recs)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((recs / "export.json").read_text())["format"] == "records"

    out = tmp_path / "llava"
    result = runner.invoke(app, ["export", "--records", str(recs), "--format", "llava", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(json.loads((out / "train.json").read_text())) == 1
    assert len(json.loads((out / "val.json").read_text())) == 1

    result = runner.invoke(app, ["validate", str(out)])
    assert result.exit_code == 0, result.output
    assert "0 error(s)" in result.output

    result = runner.invoke(app, ["card", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "README.md").is_file()


def test_import_without_out_writes_records_in_the_data_folder(tmp_path: Path) -> None:
    rows = [
        {
            "imageLink": "https://x.org/b.jpg",
            "question": "Hue?",
            "modelAnswer": "Red",
            "correctAnswer": "Blue.",
        }
    ]
    source = tmp_path / "downloads" / "val.json"
    source.parent.mkdir()
    source.write_text(json.dumps(rows))
    env = {"GAP_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    result = runner.invoke(app, ["import", str(source), "--format", "gap-vqa"], env=env)
    assert result.exit_code == 0, result.output
    records = tmp_path / "data" / "records" / "val"
    assert json.loads((records / "export.json").read_text())["format"] == "records"
    assert f"wrote 1 record(s) to {records.resolve()}" in result.output


def test_validate_fails_with_the_record_id(tmp_path: Path, records: list[Record]) -> None:
    out = tmp_path / "x"
    assert (
        runner.invoke(
            app, ["export", "--records", _save(records, tmp_path), "-f", "swift", "-o", str(out)]
        ).exit_code
        == 0
    )
    (out / "images" / "i3.png").unlink()
    result = runner.invoke(app, ["validate", str(out)])
    assert result.exit_code == 1
    assert "r6" in result.output and "image-missing" in result.output


def test_export_with_split_and_dedup_options(tmp_path: Path, records: list[Record]) -> None:
    out = tmp_path / "x"
    args = [
        "export",
        "--records",
        _save(records, tmp_path),
        "-f",
        "sharegpt",
        "-o",
        str(out),
        "--split",
        "val=0.25",
        "--seed",
        "3",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["split"] == "val=0.25" and manifest["seed"] == 3
    assert set(manifest["splits"]) == {"train", "val"}


def test_errors_are_one_clean_line(tmp_path: Path, records: list[Record]) -> None:
    result = runner.invoke(
        app, ["export", "--records", _save(records, tmp_path), "-f", "csv", "-o", str(tmp_path / "x")]
    )
    assert result.exit_code == 1 and "unknown format" in result.output
    result = runner.invoke(
        app, ["export", "--records", str(tmp_path / "nope"), "-f", "llava", "-o", str(tmp_path / "x")]
    )
    assert result.exit_code == 1 and "no records file" in result.output
    result = runner.invoke(
        app,
        [
            "export",
            "--records",
            _save(records, tmp_path),
            "-f",
            "llava",
            "-o",
            str(tmp_path / "x"),
            "--push-to-hub",
            "me/x",
        ],
    )
    assert result.exit_code == 1 and "--format hf" in result.output
    result = runner.invoke(app, ["import", str(tmp_path / "absent.json"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "does not exist" in result.output
    result = runner.invoke(app, ["validate", str(tmp_path / "absent")])
    assert result.exit_code == 1 and "not a folder" in result.output
    assert "Traceback" not in result.output


def _save(records: list[Record], tmp_path: Path) -> str:
    folder = tmp_path / "recs"
    if not folder.exists():
        save_records(records, folder, manifest={"source": "test"})
    return str(folder)
