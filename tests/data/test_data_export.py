"""Exports load with their consumers' own loaders, split by image, and are written atomically."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gap.data import (
    Record,
    assign_splits,
    export_records,
    parse_split,
    read_manifest,
    read_records,
    split_file,
)
from gap.errors import InputError

datasets = pytest.importorskip("datasets")


def split_records(records: list[Record]) -> list[Record]:
    return assign_splits(records, parse_split("val=0.25"), seed=1)


@pytest.mark.parametrize("fmt", ["llava", "sharegpt", "swift"])
def test_json_formats_load_with_datasets(tmp_path: Path, records: list[Record], fmt: str) -> None:
    out = tmp_path / fmt
    result = export_records(split_records(records), out, fmt=fmt)  # type: ignore[arg-type]
    files = {split: str(out / split_file(fmt, split)) for split in result.splits}
    loaded = datasets.load_dataset("json", data_files=files)
    assert {split: len(loaded[split]) for split in loaded} == result.splits
    for split in loaded:
        for row in loaded[split]:
            images = [row["image"]] if fmt == "llava" else row["images"]
            for image in images:
                assert not Path(image).is_absolute() and (out / image).is_file()


def test_llava_schema(tmp_path: Path, records: list[Record]) -> None:
    export_records(records, tmp_path / "x", fmt="llava")
    rows = json.loads((tmp_path / "x" / "train.json").read_text())
    for row in rows:
        assert set(row) == {"id", "image", "conversations"}
        assert row["conversations"][0]["from"] == "human"
        assert row["conversations"][0]["value"].startswith("<image>\n")
        assert sum(t["value"].count("<image>") for t in row["conversations"]) == 1


def test_sharegpt_has_a_dataset_info_entry_per_split(tmp_path: Path, records: list[Record]) -> None:
    out = tmp_path / "x"
    export_records(split_records(records), out, fmt="sharegpt", name="mygap")
    info = json.loads((out / "dataset_info.json").read_text())
    assert set(info) == {"mygap_train", "mygap_val"}
    for entry in info.values():
        assert entry["formatting"] == "sharegpt"
        assert entry["columns"] == {"messages": "messages", "images": "images"}
        rows = json.loads((out / entry["file_name"]).read_text())
        for row in rows:
            assert {m["role"] for m in row["messages"]} <= {"user", "assistant"}
            assert sum(m["content"].count("<image>") for m in row["messages"]) == len(row["images"])


def test_swift_is_json_lines(tmp_path: Path, records: list[Record]) -> None:
    export_records(records, tmp_path / "x", fmt="swift")
    lines = (tmp_path / "x" / "train.jsonl").read_text().splitlines()
    assert len(lines) == len(records)
    for line in lines:
        row = json.loads(line)
        assert {"messages", "images"} <= set(row)


def test_hf_export_loads_from_disk_with_embedded_images(tmp_path: Path, records: list[Record]) -> None:
    out = tmp_path / "hf"
    export_records(split_records(records), out, fmt="hf")
    # The dataset must not depend on the source files any more.
    for record in records:
        Path(record.image).unlink(missing_ok=True)
    loaded = datasets.load_from_disk(str(out))
    assert set(loaded) == {"train", "val"}
    row = loaded["train"][0]
    assert set(row) == {"id", "messages", "images"}
    assert row["images"][0].size == (40, 30)
    assert row["messages"][0]["role"] == "user"
    assert all("<image>" not in m["content"] for m in row["messages"])


def test_split_is_by_image_and_repeatable(records: list[Record]) -> None:
    first = split_records(records)
    assert first == split_records(records)
    by_image: dict[str, set[str]] = {}
    for record in first:
        by_image.setdefault(record.image_id, set()).add(record.split)
    assert all(len(splits) == 1 for splits in by_image.values())
    assert {r.split for r in first} == {"train", "val"}


@pytest.mark.parametrize("text", ["val", "val=0", "val=1.5", "train=0.1", "val=0.5,test=0.6", "val=x"])
def test_bad_split_specs_are_refused(text: str) -> None:
    with pytest.raises(InputError):
        parse_split(text)


def test_manifest_and_canonical_records(tmp_path: Path, records: list[Record]) -> None:
    out = tmp_path / "x"
    export_records(records, out, fmt="llava", manifest={"theta": 0.8, "source": "test"})
    manifest = read_manifest(out)
    assert manifest["format"] == "llava"
    assert manifest["theta"] == 0.8
    assert manifest["splits"] == {"train": {"file": "train.json", "records": len(records)}}
    assert manifest["images"] == {"local": 4, "remote": 0}
    back = read_records(out)
    assert [r.id for r in back] == [r.id for r in records]
    assert all(Path(r.image).parent == (out / "images").resolve() for r in back)


def test_export_replaces_an_earlier_export_whole(tmp_path: Path, records: list[Record]) -> None:
    out = tmp_path / "x"
    export_records(split_records(records), out, fmt="swift")
    assert (out / "val.jsonl").exists()
    export_records(records, out, fmt="swift")
    assert not (out / "val.jsonl").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_failed_export_leaves_the_old_one_intact(tmp_path: Path, records: list[Record]) -> None:
    out = tmp_path / "x"
    export_records(records, out, fmt="llava")
    before = (out / "train.json").read_text()
    broken = [*records, dataclasses.replace(records[0], id="missing", image=str(tmp_path / "nope.png"))]
    with pytest.raises(InputError, match=r"nope\.png"):
        export_records(broken, out, fmt="llava")
    assert (out / "train.json").read_text() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_refuses_to_overwrite_a_foreign_folder(tmp_path: Path, records: list[Record]) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not an earlier GAP export"):
        export_records(records, tmp_path / "mine", fmt="llava")


def test_duplicate_ids_and_empty_input_are_refused(tmp_path: Path, records: list[Record]) -> None:
    with pytest.raises(InputError, match="duplicate"):
        export_records([records[0], records[0]], tmp_path / "x", fmt="llava")
    with pytest.raises(InputError, match="no records"):
        export_records([], tmp_path / "x", fmt="llava")
    with pytest.raises(InputError, match="unknown format"):
        export_records(records, tmp_path / "x", fmt="csv")  # type: ignore[arg-type]


# --- remote images ------------------------------------------------------------------------------


@pytest.fixture
def image_server(image_files: list[Path]) -> Iterator[str]:
    """A local HTTP server for the test images (no outside network)."""
    handler = partial(SimpleHTTPRequestHandler, directory=str(image_files[0].parent))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_remote_images_stay_urls_unless_fetched(
    tmp_path: Path, records: list[Record], image_server: str
) -> None:
    remote = [dataclasses.replace(r, image=f"{image_server}/{Path(r.image).name}") for r in records]
    export_records(remote, tmp_path / "urls", fmt="sharegpt")
    rows = json.loads((tmp_path / "urls" / "train.json").read_text())
    assert all(row["images"][0].startswith(image_server) for row in rows)

    result = export_records(remote, tmp_path / "fetched", fmt="sharegpt", fetch_images=True)
    assert result.images_local == 4 and result.images_remote == 0
    rows = json.loads((tmp_path / "fetched" / "train.json").read_text())
    assert all((tmp_path / "fetched" / row["images"][0]).is_file() for row in rows)


def test_fetch_failure_fails_the_export(tmp_path: Path, records: list[Record], image_server: str) -> None:
    remote = [dataclasses.replace(records[0], image=f"{image_server}/absent.png")]
    with pytest.raises(InputError, match=r"absent\.png"):
        export_records(remote, tmp_path / "x", fmt="llava", fetch_images=True)
    assert not (tmp_path / "x").exists()


def test_hf_with_remote_images_keeps_urls_and_refuses_a_mix(tmp_path: Path, records: list[Record]) -> None:
    remote = [dataclasses.replace(r, image=f"https://example.org/{r.image_id}.png") for r in records]
    export_records(remote, tmp_path / "hf", fmt="hf")
    assert datasets.load_from_disk(str(tmp_path / "hf"))["train"][0]["images"][0].startswith("https://")
    with pytest.raises(InputError, match="fetch-images"):
        export_records([remote[0], records[2]], tmp_path / "mixed", fmt="hf")


def test_push_to_hub_only_uploads_hf_exports(
    tmp_path: Path, records: list[Record], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gap.data import push_to_hub
    from gap.errors import GapError

    calls: list[tuple[str, bool]] = []

    def fake_push(self: object, repo_id: str, *, private: bool) -> None:
        calls.append((repo_id, private))

    monkeypatch.setattr(datasets.DatasetDict, "push_to_hub", fake_push)
    export_records(records, tmp_path / "hf", fmt="hf")
    push_to_hub(tmp_path / "hf", "me/gap")
    assert calls == [("me/gap", True)]

    export_records(records, tmp_path / "l", fmt="llava")
    with pytest.raises(InputError, match="only an hf export"):
        push_to_hub(tmp_path / "l", "me/gap")

    def failing_push(self: object, repo_id: str, *, private: bool) -> None:
        raise OSError("no network")

    monkeypatch.setattr(datasets.DatasetDict, "push_to_hub", failing_push)
    with pytest.raises(GapError, match="no network"):
        push_to_hub(tmp_path / "hf", "me/gap")
