"""Pools from datasets: COCO annotation files (streamed) and CSV/JSONL manifests of paths or URLs.

COCO's train2017 annotations are a 450 MB JSON file; :func:`iter_json_arrays` reads any such file
with memory bounded by one array element plus a read buffer, so only what the import needs per image
(file name, object count, category ids) is ever held.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO
from urllib.parse import unquote, urlparse

import httpx

from gap.errors import ImageError, InputError
from gap.game import Pool
from gap.services.images import MAX_IMAGE_BYTES, parse_pool

CHUNK_CHARS = 1 << 16
_AFTER_VALUE = frozenset(" \t\r\n,:]}")
TAINTED_MAX_OBJECTS = 3
"""The authors' rule: images with fewer than 4 annotated objects are simple, hence tainted."""


class _Reader:
    """A sliding window over a text stream, for decoding one JSON value at a time."""

    def __init__(self, stream: TextIO, on_read: Callable[[int], None] | None) -> None:
        self.stream, self.on_read = stream, on_read
        self.buf, self.pos, self.eof = "", 0, False
        self.decoder = json.JSONDecoder()

    def _more(self) -> bool:
        if self.eof:
            return False
        chunk = self.stream.read(CHUNK_CHARS)
        if not chunk:
            self.eof = True
            return False
        if self.on_read is not None:
            self.on_read(len(chunk))
        self.buf, self.pos = self.buf[self.pos :] + chunk, 0
        return True

    def peek(self) -> str:
        """The next non-blank character ('' at the end of the stream), not consumed."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._more():
                return ""

    def take(self, expected: str) -> None:
        found = self.peek()
        if found != expected:
            raise InputError(f"not the JSON expected: {expected!r} expected, found {found or 'the end'!r}")
        self.pos += 1

    def separator(self, closing: str) -> None:
        """Consume the comma after a value, or check that ``closing`` follows it."""
        if self.peek() == ",":
            self.pos += 1
        elif self.peek() != closing:
            self.take(closing)

    def value(self) -> object:
        """Decode the next whole JSON value, reading more until it is complete."""
        self.peek()
        while True:
            try:
                obj, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError:
                if self._more():
                    continue
                raise InputError("the JSON file is damaged or truncated") from None
            # Valid JSON goes on with a blank or a delimiter; anything else (or the end of the
            # window) means a number was cut by the chunk boundary, as "12" of "12.5".
            if (end == len(self.buf) or self.buf[end] not in _AFTER_VALUE) and self._more():
                continue
            self.pos = end
            return obj


def iter_json_arrays(
    stream: TextIO, on_read: Callable[[int], None] | None = None
) -> Iterator[tuple[str, object]]:
    """``(key, element)`` for each element of each array member of a top-level JSON object, in order.

    Members that are not arrays are yielded once as ``(key, value)``. ``on_read`` gets the number of
    characters of each chunk read, for a progress bar.
    """
    reader = _Reader(stream, on_read)
    reader.take("{")
    while reader.peek() != "}":
        key = reader.value()
        if not isinstance(key, str):
            raise InputError("not a JSON object at the top level")
        reader.take(":")
        if reader.peek() == "[":
            reader.take("[")
            while reader.peek() != "]":
                yield key, reader.value()
                reader.separator("]")
            reader.take("]")
        else:
            yield key, reader.value()
        reader.separator("}")
    reader.take("}")


@dataclass
class CocoImage:
    coco_id: int
    file_name: str
    objects: int = 0
    category_ids: set[int] = field(default_factory=set)


def read_coco(
    stream: TextIO, on_read: Callable[[int], None] | None = None
) -> tuple[list[CocoImage], dict[int, str]]:
    """Every image of a COCO ``instances_*.json`` with its object count and category ids, by COCO id;
    and the category names by id."""
    images: dict[int, CocoImage] = {}
    pending: dict[int, CocoImage] = {}  # annotations met before their image (COCO puts images first)
    categories: dict[int, str] = {}
    for key, item in iter_json_arrays(stream, on_read):
        if not isinstance(item, dict):
            continue
        if key == "images":
            coco_id = int(item["id"])
            entry = pending.pop(coco_id, None) or CocoImage(coco_id, "")
            entry.file_name = str(item["file_name"])
            images[coco_id] = entry
        elif key == "annotations":
            coco_id = int(item["image_id"])
            entry = images.get(coco_id) or pending.setdefault(coco_id, CocoImage(coco_id, ""))
            entry.objects += 1
            entry.category_ids.add(int(item["category_id"]))
        elif key == "categories":
            categories[int(item["id"])] = str(item["name"])
    return sorted(images.values(), key=lambda image: image.coco_id), categories


def coco_pool(image: CocoImage, tainted_max_objects: int = TAINTED_MAX_OBJECTS) -> Pool:
    return Pool.TAINTED if image.objects <= tainted_max_objects else Pool.UNTAINTED


def coco_meta(image: CocoImage, categories: dict[int, str]) -> dict[str, object]:
    names = sorted({categories.get(cid, str(cid)) for cid in image.category_ids})
    return {"coco_id": image.coco_id, "objects": image.objects, "categories": names}


def choose(images: list[CocoImage], limit: int | None, seed: int) -> list[CocoImage]:
    """A seeded random sample of ``limit`` images (all of them without a limit), in COCO id order."""
    if limit is None or limit >= len(images):
        return images
    picked = random.Random(seed).sample(range(len(images)), limit)
    return [images[i] for i in sorted(picked)]


@dataclass(frozen=True)
class ManifestRow:
    line: int
    source: str
    """A path (relative to the manifest's folder unless absolute) or an http(s) URL."""
    pool: Pool
    meta: dict[str, object]


def _tags(value: object) -> list[str]:
    if isinstance(value, list):
        return [str(tag) for tag in value]
    return [tag.strip() for tag in str(value or "").split(";") if tag.strip()]


def _row(line: int, record: dict[str, object]) -> ManifestRow:
    url, path = record.pop("url", None), record.pop("path", None)
    source = url or path
    if not source:
        raise InputError(f"line {line}: needs a `path` or a `url`")
    try:
        pool = parse_pool(str(record.pop("pool", "")))
    except InputError as exc:
        raise InputError(f"line {line}: {exc.message}") from None
    tags = _tags(record.pop("tags", None))
    meta: dict[str, object] = {"source": str(source), "tags": tags}
    meta.update({key: value for key, value in record.items() if value not in (None, "")})
    return ManifestRow(line, str(source), pool, meta)


def read_manifest(path: Path) -> Iterator[ManifestRow | InputError]:
    """The rows of a ``.csv`` (header: path or url, pool, tags separated by ``;``, any other columns)
    or ``.jsonl`` manifest; other columns go into the image's metadata. A bad row yields its error."""
    with path.open(encoding="utf-8", newline="") as stream:
        if path.suffix.lower() == ".jsonl":
            for number, text in enumerate(stream, start=1):
                if not text.strip():
                    continue
                try:
                    record = json.loads(text)
                    if not isinstance(record, dict):
                        raise InputError(f"line {number}: not a JSON object")
                    yield _row(number, record)
                except json.JSONDecodeError:
                    yield InputError(f"line {number}: not valid JSON")
                except InputError as exc:
                    yield exc
        elif path.suffix.lower() == ".csv":
            for number, fields in enumerate(csv.DictReader(stream), start=2):
                try:
                    yield _row(number, {key: value for key, value in fields.items() if key})
                except InputError as exc:
                    yield exc
        else:
            raise InputError(f"a manifest is a .csv or .jsonl file, got {path.name!r}")


def is_url(source: str) -> bool:
    return urlparse(source).scheme in ("http", "https")


def source_name(source: str) -> str:
    """The file name an image is listed under: the last part of its path or URL path."""
    if is_url(source):
        return unquote(urlparse(source).path.rstrip("/").rsplit("/", 1)[-1]) or urlparse(source).netloc
    return Path(source).name


def fetch_bytes(client: httpx.Client, url: str) -> bytes:
    """The body at ``url``, refused beyond the pools' size limit without reading the rest."""
    try:
        with client.stream("GET", url) as response:
            if response.status_code != 200:
                raise ImageError(f"HTTP {response.status_code}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_IMAGE_BYTES:
                    raise ImageError(f"larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MiB")
            return bytes(body)
    except httpx.HTTPError as exc:
        raise ImageError(f"download failed ({type(exc).__name__})") from None


def load_source(client: httpx.Client, source: str, base: Path) -> bytes:
    if is_url(source):
        return fetch_bytes(client, source)
    path = Path(source) if Path(source).is_absolute() else base / source
    if not path.is_file():
        raise ImageError("no such file")
    return path.read_bytes()
