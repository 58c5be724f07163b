"""Training examples from an export folder, after the same checks as ``gap data validate``.

Every export (hf, sharegpt, llava, swift) and every ``gap data import`` folder holds the canonical
``records.jsonl`` beside its ``export.json`` manifest, so one reader serves all formats: the format's
own files are what other tools read, the records are what GAP trains on. A set that fails validation
stops here, before any weights load.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

from gap.data import RECORDS_FILE, ValidationReport, read_manifest, read_records, strip_image_tokens
from gap.data import validate_export as _validate
from gap.data._io import MANIFEST_FILE
from gap.errors import InputError

VAL_SPLITS = ("val", "validation", "eval")
_SHOWN_PROBLEMS = 10


@dataclass(frozen=True, slots=True)
class Example:
    """One conversation about one local image: ``(role, text)`` turns, ending with the answer."""

    id: str
    image: str
    image_id: str
    turns: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class TrainingData:
    train: list[Example]
    val: list[Example]
    format: str
    data_hash: str
    ignored_splits: dict[str, int]


def validation_failure(report: ValidationReport) -> InputError:
    """The error that stops training on a failing set: counts by check, then the first problems."""
    errors = report.errors
    counts = ", ".join(f"{check}: {n}" for check, n in sorted(report.by_check().items()))
    lines = [f"{p.record_id} ({p.split}) {p.check}: {p.message}" for p in errors[:_SHOWN_PROBLEMS]]
    more = f"\n... and {len(errors) - _SHOWN_PROBLEMS} more" if len(errors) > _SHOWN_PROBLEMS else ""
    return InputError(
        f"{report.directory} fails `gap data validate` ({len(errors)} error(s); {counts}); "
        "fix the export before training:\n" + "\n".join(lines) + more
    )


def _data_hash(directory: Path, examples: list[Example]) -> str:
    """SHA-256 of the records file and every image it uses, so a summary pins the exact data."""
    digest = hashlib.sha256((directory / RECORDS_FILE).read_bytes())
    for image in sorted({e.image for e in examples}):
        digest.update(Path(image).read_bytes())
    return digest.hexdigest()


def _holdout(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """A seeded val share chosen by image, so one image never sits on both sides."""
    images = sorted({e.image_id for e in examples})
    random.Random(seed).shuffle(images)
    n_val = round(len(images) * fraction)
    if fraction > 0 and n_val == 0 and len(images) > 1:
        n_val = 1
    held = set(images[:n_val])
    return [e for e in examples if e.image_id not in held], [e for e in examples if e.image_id in held]


def load_training_data(directory: Path, *, val_fraction: float = 0.0, seed: int = 0) -> TrainingData:
    """The train and val examples of an export; :class:`InputError` if it fails validation."""
    directory = Path(directory)
    if not (directory / MANIFEST_FILE).is_file():
        raise InputError(
            f"{directory} is not a GAP export (no {MANIFEST_FILE}): train on a folder that "
            "`gap data export` or `gap data import` wrote"
        )
    manifest = read_manifest(directory)
    report = _validate(directory)
    if not report.ok:
        raise validation_failure(report)
    by_split: dict[str, list[Example]] = {}
    for record in read_records(directory / RECORDS_FILE):
        if not Path(record.image).is_file():
            raise InputError(
                f"record {record.id}: image {record.image} is not a local file; "
                "export with --fetch-images to train on remote images"
            )
        turns = tuple((m.role, strip_image_tokens(m.text)) for m in record.messages)
        example = Example(record.id, record.image, record.image_id, turns)
        by_split.setdefault(record.split, []).append(example)
    train = by_split.pop("train", [])
    val = [e for name in VAL_SPLITS for e in by_split.pop(name, [])]
    if not train:
        raise InputError(f"{directory} has no 'train' records (splits: {', '.join(by_split) or 'none'})")
    if not val and val_fraction > 0:
        train, val = _holdout(train, val_fraction, seed)
    return TrainingData(
        train=train,
        val=val,
        format=str(manifest.get("format")),
        data_hash=_data_hash(directory, train + val),
        ignored_splits={name: len(items) for name, items in by_split.items()},
    )
