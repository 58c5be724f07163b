"""The image pools: validate, store under content-hash names, list, move and disable."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gap._text import clean_text
from gap.db.models import Image
from gap.errors import Conflict, ImageError, InputError, NotFound
from gap.game import Pool

if TYPE_CHECKING:
    from gap.storage import Store

MIME_BY_FORMAT = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}
SUFFIX_BY_MIME = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "image/gif": ".gif"}
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 50_000_000


@dataclass(frozen=True)
class ImageInfo:
    mime_type: str
    width: int
    height: int
    sha256: str


def parse_pool(value: str) -> Pool:
    try:
        return Pool(value)
    except ValueError:
        raise InputError(f"pool must be 'tainted' or 'untainted', got {value!r}") from None


def decode_image(data: bytes) -> tuple[str, int, int]:
    """The format and size of ``data``, decoded fully, after refusing more than MAX_PIXELS pixels.

    The pixel count is read from the header before decoding, so a small file that would decode to
    gigabytes (a decompression bomb) costs nothing; PIL's own bomb check is reported the same way.
    """
    try:
        with PILImage.open(io.BytesIO(data)) as img:
            fmt = img.format or ""
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise ImageError(
                    f"the image is too large ({width}x{height} pixels; at most {MAX_PIXELS:,} pixels)"
                )
            img.load()  # decodes fully: catches truncated files that only have a valid header
    except PILImage.DecompressionBombError:
        raise ImageError(f"the image is too large (more than {MAX_PIXELS:,} pixels)") from None
    except UnidentifiedImageError:
        raise ImageError("not an image (or a format GAP cannot read)") from None
    except (OSError, SyntaxError, ValueError):
        raise ImageError("the image data is damaged or truncated") from None
    return fmt, width, height


def inspect_image(data: bytes) -> ImageInfo:
    """Check that ``data`` is a complete image in a format browsers and VLM processors both read."""
    if not data:
        raise ImageError("the file is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(f"the file is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MiB")
    fmt, width, height = decode_image(data)
    if fmt not in MIME_BY_FORMAT:
        raise ImageError(f"unsupported image format {fmt or 'unknown'}; use JPEG, PNG, WebP or GIF")
    return ImageInfo(MIME_BY_FORMAT[fmt], width, height, hashlib.sha256(data).hexdigest())


def downscale(data: bytes, info: ImageInfo, max_side: int) -> bytes:
    """``data`` (described by ``info``) with its long side brought down to ``max_side`` (0: unchanged),
    in the same format.

    The model never needs more pixels than its processor keeps, and the pools stay small. Images
    already small enough, and GIFs (which may be animated), are returned as they are. The EXIF
    orientation is applied first, since the re-encoded file carries no EXIF.
    """
    if max_side <= 0 or max(info.width, info.height) <= max_side or info.mime_type == "image/gif":
        return data
    with PILImage.open(io.BytesIO(data)) as opened:
        fmt = opened.format or "PNG"
        img = ImageOps.exif_transpose(opened)
        img.thumbnail((max_side, max_side), PILImage.Resampling.LANCZOS)
        if fmt == "JPEG" and img.mode not in ("RGB", "L"):
            img = img.convert("RGB")
        out = io.BytesIO()
        img.save(out, format=fmt, **({"quality": 90} if fmt in ("JPEG", "WEBP") else {}))
    return out.getvalue()


def iter_image_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Files named directly, and every non-hidden file below named folders, in a stable order."""
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and not any(
                    part.startswith(".") for part in child.relative_to(path).parts
                ):
                    yield child
        else:
            yield path


def add_image(
    db: Session,
    *,
    images: Store,
    data: bytes,
    original_name: str,
    pool: Pool,
    now: datetime,
    max_side: int = 0,
    meta: dict[str, object] | None = None,
) -> Image:
    """Validate, downscale (``max_side``, see :func:`downscale`) and store one image in ``images``
    under its content-hash key; the file lands before the row, and the row only if all is well.

    A file already in the pools (same stored content hash) raises :class:`Conflict` and changes nothing.
    """
    original_name = clean_text(original_name)
    info = inspect_image(data)
    smaller = downscale(data, info, max_side)
    if smaller is not data:
        data, info = smaller, inspect_image(smaller)
    existing = db.scalar(select(Image).where(Image.sha256 == info.sha256))
    if existing is not None:
        raise Conflict(f"already added (same content as {existing.original_name!r}, pool {existing.pool})")
    relative = f"{info.sha256[:2]}/{info.sha256}{SUFFIX_BY_MIME[info.mime_type]}"
    if not images.exists(relative):
        images.put(relative, data)
    image = Image(
        pool=pool.value,
        path=relative,
        sha256=info.sha256,
        mime_type=info.mime_type,
        width=info.width,
        height=info.height,
        original_name=original_name,
        enabled=True,
        created_at=now,
        meta=meta,
    )
    try:
        with db.begin_nested():
            db.add(image)
    except IntegrityError:
        raise Conflict("already added (the same image arrived twice at once)") from None
    return image


def list_images(db: Session) -> list[Image]:
    return list(db.scalars(select(Image).order_by(Image.pool, Image.created_at, Image.original_name)))


def update_image(
    db: Session, image_id: str, *, pool: Pool | None = None, enabled: bool | None = None
) -> Image:
    """Move an image between pools or switch it off; rounds already played keep their pool."""
    image = db.get(Image, image_id)
    if image is None:
        raise NotFound("no such image")
    if pool is not None:
        image.pool = pool.value
    if enabled is not None:
        image.enabled = enabled
    db.flush()
    return image
