"""`gap images import-coco`: pools by object count, COCO metadata kept, the annotation file streamed."""

from __future__ import annotations

import io
import json
import random
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fixtures.game import png_bytes
from gap.cli import app
from gap.config import get_settings
from gap.errors import InputError
from gap.services import image_import
from gap.services.image_import import choose, iter_json_arrays, read_coco

pytestmark = pytest.mark.db

IMAGES = 300
CATEGORIES: list[dict[str, int | str]] = [
    {"id": 1, "name": "person"},
    {"id": 3, "name": "car"},
    {"id": 18, "name": "dog"},
]


def objects_of(coco_id: int) -> int:
    return coco_id % 8  # 0..7 objects: half the images have at most 3


def write_coco(folder: Path, missing: int) -> Path:
    """A COCO-format file with IMAGES images (``missing`` of them not on disk) and padded polygons,
    so the file is much larger than what the import needs to hold."""
    rng = random.Random(0)
    images_dir = folder / "val2017"
    images_dir.mkdir(parents=True)
    images: list[dict[str, object]] = []
    annotations: list[dict[str, object]] = []
    for coco_id in range(1, IMAGES + 1):
        name = f"{coco_id:012d}.png"
        images.append({"id": coco_id, "file_name": name, "width": 48, "height": 32})
        if coco_id != missing:
            (images_dir / name).write_bytes(png_bytes(coco_id))
        for k in range(objects_of(coco_id)):
            polygon = [round(rng.uniform(0, 48), 2) for _ in range(400)]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": coco_id,
                    "category_id": CATEGORIES[(coco_id + k) % len(CATEGORIES)]["id"],
                    "segmentation": [polygon],
                    "area": 12.5,
                    "bbox": [1.0, 2.0, 3.0, 4.0],
                    "iscrowd": 0,
                }
            )
    document = {
        "info": {"description": "test", "year": 2017},
        "licenses": [{"id": 1, "name": "CC"}],
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }
    path = folder / "instances_val2017.json"
    path.write_text(json.dumps(document))
    return path


def expected_categories(coco_id: int) -> list[str]:
    ids = {CATEGORIES[(coco_id + k) % len(CATEGORIES)]["id"] for k in range(objects_of(coco_id))}
    return sorted(str(c["name"]) for c in CATEGORIES if c["id"] in ids)


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> Iterator[dict[str, str]]:
    get_settings.cache_clear()
    yield {"GAP_DATA_DIR": str(tmp_path / "data"), "GAP_DATABASE_URL": database_url}
    get_settings.cache_clear()


def listed(env: dict[str, str]) -> list[dict[str, object]]:
    result = CliRunner().invoke(app, ["images", "list", "--json"], env=env)
    assert result.exit_code == 0, result.output
    rows: list[dict[str, object]] = json.loads(result.stdout)
    return rows


def test_import_coco_builds_both_pools_and_keeps_the_coco_metadata(
    env: dict[str, str], tmp_path: Path
) -> None:
    missing = 7
    annotations = write_coco(tmp_path / "coco", missing=missing)
    result = CliRunner().invoke(
        app,
        [
            "images",
            "import-coco",
            "--annotations",
            str(annotations),
            "--images",
            str(tmp_path / "coco" / "val2017"),
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    tainted = sum(1 for i in range(1, IMAGES + 1) if objects_of(i) <= 3 and i != missing)
    untainted = IMAGES - 1 - tainted
    assert (
        f"added {IMAGES - 1} image(s) ({tainted} tainted, {untainted} untainted), skipped 1" in result.output
    )
    assert f"{missing:012d}.png" in result.output

    rows = listed(env)
    assert len(rows) == IMAGES - 1
    for row in rows:
        meta = row["meta"]
        assert isinstance(meta, dict)
        coco_id = meta["coco_id"]
        assert isinstance(coco_id, int)
        assert row["name"] == f"{coco_id:012d}.png"
        assert meta["objects"] == objects_of(coco_id)
        assert meta["categories"] == expected_categories(coco_id)
        assert row["pool"] == ("tainted" if objects_of(coco_id) < 4 else "untainted")


def test_limit_and_seed_pick_a_reproducible_sample_and_the_threshold_moves_images(
    env: dict[str, str], tmp_path: Path
) -> None:
    annotations = write_coco(tmp_path / "coco", missing=0)
    args = [
        "images",
        "import-coco",
        "--annotations",
        str(annotations),
        "--images",
        str(tmp_path / "coco" / "val2017"),
    ]
    result = CliRunner().invoke(
        app, [*args, "--limit", "40", "--seed", "5", "--tainted-max-objects", "0"], env=env
    )
    assert result.exit_code == 0, result.output
    with annotations.open() as stream:
        everything, _ = read_coco(stream)
    wanted = {image.coco_id for image in choose(everything, 40, 5)}
    assert wanted != {image.coco_id for image in choose(everything, 40, 6)}
    rows = listed(env)
    assert {row["meta"]["coco_id"] for row in rows} == wanted  # type: ignore[index]
    for row in rows:
        assert row["pool"] == ("tainted" if row["meta"]["objects"] == 0 else "untainted")  # type: ignore[index]


def test_the_annotation_file_is_streamed_with_bounded_memory(tmp_path: Path) -> None:
    annotations = write_coco(tmp_path / "coco", missing=0)
    size = annotations.stat().st_size
    assert size > 2_000_000
    with annotations.open() as stream:
        tracemalloc.start()
        try:
            images, categories = read_coco(stream)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert len(images) == IMAGES and categories == {1: "person", 3: "car", 18: "dog"}
    # json.load would hold every polygon (several times the file size as Python objects).
    assert peak < size / 4, (peak, size)


def test_the_streaming_reader_agrees_with_json_at_every_chunk_boundary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    document = {
        "info": {"a": [1, 2, {"b": "x}y]"}], "n": 12345},
        "images": [{"id": 10, "file_name": "a b.jpg"}, {"id": 2, "file_name": 'q"uote\\.png'}],
        "empty": [],
        "annotations": [{"image_id": 10, "category_id": 1, "area": 1234.5e-3}, 7, -0.25, True, None, "s"],
        "count": 987654321,
    }
    text = json.dumps(document, indent=1)
    expected: list[tuple[str, object]] = []
    for key, value in document.items():
        if isinstance(value, list):
            expected += [(key, item) for item in value]
        else:
            expected.append((key, value))
    for chunk in (1, 2, 3, 7, 64):
        monkeypatch.setattr(image_import, "CHUNK_CHARS", chunk)
        assert list(iter_json_arrays(io.StringIO(text))) == expected
    with pytest.raises(InputError):
        list(iter_json_arrays(io.StringIO(text[:-40])))
