"""Train/validation splits by image, so that no image (and no near-copy of a question) leaks across."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence

from gap.data._records import Record
from gap.errors import InputError

SplitSpec = dict[str, float]


def parse_split(text: str) -> SplitSpec:
    """``"val=0.1"`` or ``"val=0.1,test=0.05"`` -> ``{"val": 0.1, ...}``; the rest stays ``train``."""
    spec: SplitSpec = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        try:
            fraction = float(value)
        except ValueError:
            fraction = -1.0
        if not sep or not name or not 0.0 < fraction < 1.0:
            raise InputError(
                f"bad split {part!r}: expected NAME=FRACTION with 0 < FRACTION < 1, e.g. val=0.1"
            )
        if name == "train" or name in spec:
            raise InputError(f"bad split {part!r}: {name!r} is 'train' or given twice")
        spec[name] = fraction
    if sum(spec.values()) >= 1.0:
        raise InputError(f"split fractions {text!r} leave nothing for train")
    return spec


def assign_splits(records: Sequence[Record], spec: SplitSpec, *, seed: int) -> list[Record]:
    """Records with ``split`` set: whole images go to each named split, the remainder to ``train``.

    Each named split gets ``round(fraction * images)`` images, at least one when there are two or
    more images; the draw depends only on ``seed`` and the set of image ids.
    """
    if not spec:
        return list(records)
    images = sorted({record.image_id for record in records})
    rng = random.Random(seed)
    rng.shuffle(images)
    chosen: dict[str, str] = {}
    start = 0
    for name, fraction in spec.items():
        count = math.floor(fraction * len(images) + 0.5)
        if count == 0 and len(images) >= 2:
            count = 1
        count = min(count, max(len(images) - start - 1, 0))
        for image_id in images[start : start + count]:
            chosen[image_id] = name
        start += count
    return [dataclasses.replace(record, split=chosen.get(record.image_id, "train")) for record in records]
