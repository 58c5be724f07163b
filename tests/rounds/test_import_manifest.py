"""`gap images import MANIFEST`: paths and URLs (a real HTTP server on 127.0.0.1), pools, tags, and
downscaling at ingest (`GAP_IMAGE_MAX_SIDE`)."""

from __future__ import annotations

import functools
import io
import json
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image as PILImage
from typer.testing import CliRunner

from fixtures.game import png_bytes
from gap.cli import app
from gap.config import get_settings

pytestmark = pytest.mark.db


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A plain static HTTP server over a fresh folder: (base URL, folder)."""
    folder = tmp_path / "www"
    folder.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", folder
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> Iterator[dict[str, str]]:
    get_settings.cache_clear()
    yield {
        "GAP_DATA_DIR": str(tmp_path / "data"),
        "GAP_DATABASE_URL": database_url,
        "GAP_IMAGE_MAX_SIDE": "256",
    }
    get_settings.cache_clear()


def jpeg_bytes(size: tuple[int, int]) -> bytes:
    img = PILImage.new("RGB", size, (200, 30, 60))
    img.paste((10, 200, 90), (0, 0, size[0] // 3, size[1] // 2))
    out = io.BytesIO()
    img.save(out, format="JPEG")
    return out.getvalue()


def listed(env: dict[str, str]) -> dict[str, dict[str, object]]:
    result = CliRunner().invoke(app, ["images", "list", "--json"], env=env)
    assert result.exit_code == 0, result.output
    return {row["name"]: row for row in json.loads(result.stdout)}


def test_csv_manifest_of_paths_and_urls(
    env: dict[str, str], tmp_path: Path, served: tuple[str, Path]
) -> None:
    base, www = served
    (www / "remote.png").write_bytes(png_bytes(2))
    (www / "large.jpg").write_bytes(jpeg_bytes((1200, 600)))
    local = tmp_path / "manifest" / "pics"
    local.mkdir(parents=True)
    (local / "local.png").write_bytes(png_bytes(1))
    manifest = tmp_path / "manifest" / "list.csv"
    manifest.write_text(
        "path,url,pool,tags,license\n"
        "pics/local.png,,tainted,street;day,cc-by\n"
        f",{base}/remote.png,untainted,indoor,\n"
        f",{base}/large.jpg,untainted,,\n"
        f",{base}/absent.png,untainted,,\n"
        "pics/local.png,,untainted,,\n"  # the same content again
        "pics/other.png,,easy,,\n"
        ",,tainted,,\n"
    )
    result = CliRunner().invoke(app, ["images", "import", str(manifest)], env=env)
    assert result.exit_code == 0, result.output
    assert "added 3 image(s) (1 tainted, 2 untainted), skipped 4" in result.output
    assert "HTTP 404" in result.output and "already added" in result.output
    assert "line 7: pool must be" in result.output and "line 8: needs a `path` or a `url`" in result.output

    rows = listed(env)
    assert set(rows) == {"local.png", "remote.png", "large.jpg"}
    assert rows["local.png"]["pool"] == "tainted"
    assert rows["local.png"]["meta"] == {
        "source": "pics/local.png",
        "tags": ["street", "day"],
        "license": "cc-by",
    }
    assert rows["remote.png"]["meta"] == {"source": f"{base}/remote.png", "tags": ["indoor"]}
    # Downscaled at ingest to the long side of GAP_IMAGE_MAX_SIDE, aspect kept; small ones untouched.
    assert (rows["large.jpg"]["width"], rows["large.jpg"]["height"]) == (256, 128)
    assert (rows["local.png"]["width"], rows["local.png"]["height"]) == (48, 32)
    stored = [p for p in (tmp_path / "data" / "images").rglob("*.jpg")]
    assert len(stored) == 1
    with PILImage.open(stored[0]) as img:
        assert img.size == (256, 128)


def test_jsonl_manifest_and_the_same_large_image_is_stored_once(
    env: dict[str, str], tmp_path: Path, served: tuple[str, Path]
) -> None:
    base, www = served
    (www / "large.jpg").write_bytes(jpeg_bytes((900, 1800)))
    (tmp_path / "large-copy.jpg").write_bytes((www / "large.jpg").read_bytes())
    manifest = tmp_path / "list.jsonl"
    lines = [
        {"url": f"{base}/large.jpg", "pool": "untainted", "tags": ["tall", "red"], "coco_id": 42},
        {"path": str(tmp_path / "large-copy.jpg"), "pool": "tainted"},
        "not json",
    ]
    manifest.write_text(
        "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    )
    result = CliRunner().invoke(app, ["images", "import", str(manifest)], env=env)
    assert result.exit_code == 0, result.output
    assert "added 1 image(s) (0 tainted, 1 untainted), skipped 2" in result.output
    assert "already added" in result.output and "line 3: not valid JSON" in result.output
    (row,) = listed(env).values()
    assert row["meta"] == {"source": f"{base}/large.jpg", "tags": ["tall", "red"], "coco_id": 42}
    assert (row["width"], row["height"]) == (128, 256)


def test_a_manifest_of_another_kind_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    manifest = tmp_path / "list.txt"
    manifest.write_text("a.png\n")
    result = CliRunner().invoke(app, ["images", "import", str(manifest)], env=env)
    assert result.exit_code == 1 and "a .csv or .jsonl file" in result.output
