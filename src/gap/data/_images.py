"""Put each record's image next to an export: local files and ``s3://`` objects are copied, URLs stay
URLs unless fetched."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import httpx

from gap.errors import GapError, ImageError, InputError
from gap.services.images import decode_image
from gap.storage import is_s3_url

IMAGES_DIR = "images"
_SUFFIX_BY_FORMAT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp"}
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_FETCH_WORKERS = 8
_FETCH_ATTEMPTS = 3


def is_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def url_file_name(url: str) -> str:
    """The last path segment of a URL (``.../000000321702.jpg`` -> ``000000321702.jpg``)."""
    return Path(urlparse(url).path).name


def image_suffix(data: bytes) -> str:
    """The file suffix for image bytes; anything PIL cannot identify is an :class:`ImageError`."""
    fmt, _width, _height = decode_image(data)
    return _SUFFIX_BY_FORMAT.get(fmt, ".img")


def _safe_stem(image_id: str) -> str:
    stem = _SAFE.sub("_", image_id).strip("._") or "image"
    return stem[:120]


def fetch_url(url: str, *, client: httpx.Client) -> bytes:
    """The bytes at ``url``, retried a few times; failures become :class:`InputError`."""
    last = ""
    for _ in range(_FETCH_ATTEMPTS):
        try:
            response = client.get(url)
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
            continue
        if response.status_code == 200:
            return response.content
        last = f"HTTP {response.status_code}"
        if response.status_code < 500:
            break
    raise InputError(f"could not fetch {url}: {last}")


def place_images(
    sources: Iterable[tuple[str, str]],
    out_dir: Path,
    *,
    fetch: bool = False,
    timeout: float = 30.0,
    advance: Callable[[], None] | None = None,
    read_object: Callable[[str], bytes] | None = None,
) -> dict[str, str]:
    """Copy (or fetch) each ``(image, image_id)`` into ``out_dir/images``; map image -> export reference.

    Local images become ``images/<image_id><suffix>`` (relative to ``out_dir``); URLs map to themselves
    unless ``fetch``. ``s3://`` images (the game's, on S3 storage) are read with ``read_object``
    (:func:`gap.storage.s3_reader`). A missing or unreadable file fails the whole call, naming the
    first few, so no export ever points at an image that is not there.
    """
    unique: dict[str, str] = {}
    for image, image_id in sources:
        unique.setdefault(image, image_id)
    target_dir = Path(out_dir) / IMAGES_DIR
    target_dir.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    mapping: dict[str, str] = {}
    errors: list[str] = []

    def name_for(image_id: str, suffix: str) -> str:
        stem, n = _safe_stem(image_id), 1
        name = f"{stem}{suffix}"
        while name in taken:
            n += 1
            name = f"{stem}-{n}{suffix}"
        taken.add(name)
        return name

    remote = [(image, image_id) for image, image_id in unique.items() if is_url(image)]
    for image, image_id in unique.items():
        if is_url(image):
            continue
        path = Path(image)
        suffix = path.suffix.lower() or ".img"
        if is_s3_url(image):
            if read_object is None:
                errors.append(f"{image} (no S3 storage configured)")
                continue
            try:
                data = read_object(image)
            except GapError as exc:
                errors.append(f"{image} ({exc.message})")
                continue
            name = name_for(image_id, suffix)
            (target_dir / name).write_bytes(data)
        elif not path.is_file():
            errors.append(f"{image} (missing)")
            continue
        else:
            name = name_for(image_id, suffix)
            shutil.copyfile(path, target_dir / name)
        mapping[image] = f"{IMAGES_DIR}/{name}"
        if advance:
            advance()
    if errors:
        raise InputError(f"{len(errors)} image(s) cannot be exported: " + ", ".join(errors[:5]))

    if not fetch:
        for image, _ in remote:
            mapping[image] = image
            if advance:
                advance()
        return mapping

    with (
        httpx.Client(timeout=timeout, follow_redirects=True) as client,
        ThreadPoolExecutor(max_workers=_FETCH_WORKERS) as pool,
    ):
        futures = {image: pool.submit(fetch_url, image, client=client) for image, _ in remote}
        for image, image_id in remote:
            try:
                data = futures[image].result()
                suffix = image_suffix(data)
            except (InputError, ImageError) as exc:
                errors.append(f"{image} ({exc.message})")
                continue
            name = name_for(image_id, suffix)
            (target_dir / name).write_bytes(data)
            mapping[image] = f"{IMAGES_DIR}/{name}"
            if advance:
                advance()
    if errors:
        raise InputError(f"{len(errors)} image(s) could not be fetched: " + ", ".join(errors[:5]))
    return mapping
