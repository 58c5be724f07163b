"""A demo image set that works offline: photos bundled with scikit-image (optional `demo` extra)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from gap.db.engine import transaction
from gap.errors import ConfigError, Conflict
from gap.game import Pool
from gap.services.game import utcnow
from gap.services.images import add_image
from gap.storage import Store

# Simple scenes with few objects, which a VLM describes well: the paper's tainted pool (COCO, < 4 objects).
TAINTED = ["chelsea.png", "coffee.png", "rocket.jpg", "horse.png", "astronaut.png", "camera.png"]
# Busier or stranger scenes, where real mistakes are to be found.
UNTAINTED = [
    "coins.png",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
    "page.png",
    "text.png",
    "color.png",
    "retina.jpg",
    "ihc.png",
]


def demo_image_files() -> list[tuple[Path, Pool]]:
    try:
        import skimage
    except ImportError as exc:
        raise ConfigError("the demo images come with scikit-image: pip install 'gap[demo]'") from exc
    folder = Path(skimage.__file__).parent / "data"
    files = [(folder / name, Pool.TAINTED) for name in TAINTED]
    files += [(folder / name, Pool.UNTAINTED) for name in UNTAINTED]
    return [(path, pool) for path, pool in files if path.is_file()]


def add_demo_images(factory: sessionmaker[Session], images: Store) -> int:
    """Add the demo photos to their pools, skipping those already there; returns how many were new."""
    added = 0
    for path, pool in demo_image_files():
        try:
            with transaction(factory) as db:
                add_image(
                    db,
                    images=images,
                    data=path.read_bytes(),
                    original_name=path.name,
                    pool=pool,
                    now=utcnow(),
                )
            added += 1
        except Conflict:
            continue
    return added
