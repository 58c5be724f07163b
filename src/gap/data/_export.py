"""Write records as a fine-tuning set in one consumer's format, atomically, with a manifest.

The export folder holds ``records.jsonl`` (canonical records, image paths relative to the folder),
``images/``, the split files of the chosen format, and ``export.json`` (what was written and how).
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from gap.data._exporters import (
    FORMATS,
    Format,
    dataset_info_entry,
    hf_row,
    llava_row,
    sharegpt_row,
    swift_row,
)
from gap.data._images import is_url, place_images
from gap.data._io import MANIFEST_FILE, atomic_write_json, read_json, staged_dir
from gap.data._progress import progress_bar
from gap.data._records import RECORDS_FILE, Record, write_records
from gap.errors import ConfigError, GapError, InputError
from gap.storage import LocalStore, Store

EXPORT_SCHEMA = 1
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_ROW_BUILDERS: dict[str, Callable[[Record, str], dict[str, Any]]] = {
    "llava": llava_row,
    "sharegpt": sharegpt_row,
    "swift": swift_row,
}


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote."""

    out_dir: Path
    format: Format
    splits: dict[str, int]
    files: tuple[str, ...]
    images_local: int
    images_remote: int


def gap_version() -> str:
    try:
        return version("gap")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def split_file(fmt: str, split: str) -> str:
    """The file (or folder, for ``hf``) holding ``split`` in format ``fmt``."""
    return {"llava": f"{split}.json", "sharegpt": f"{split}.json", "swift": f"{split}.jsonl", "hf": split}[
        fmt
    ]


def _check(records: Sequence[Record], fmt: str) -> None:
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if not records:
        raise InputError("no records to export")
    duplicated = [rid for rid, n in Counter(r.id for r in records).items() if n > 1]
    if duplicated:
        raise InputError(f"duplicate record ids: {', '.join(sorted(duplicated)[:5])}")
    bad = sorted({r.split for r in records if not _SPLIT_NAME.match(r.split)})
    if bad:
        raise InputError(f"split names must be letters, digits, '_' or '-': {bad}")


def _ordered_splits(records: Sequence[Record]) -> list[str]:
    names = {r.split for r in records}
    return sorted(names, key=lambda name: (name != "train", name))


def _write_hf(stage: Path, by_split: Mapping[str, list[Record]], refs: Mapping[str, str]) -> None:
    try:
        import datasets
    except ImportError as exc:
        raise ConfigError(
            f"the hf format needs the datasets package: pip install 'gap[train]' ({exc})"
        ) from None
    remote = {is_url(ref) for ref in refs.values()}
    if remote == {True, False}:
        raise InputError("the hf format cannot mix local and remote images; add --fetch-images")
    all_remote = remote == {True}
    message = {"role": datasets.Value("string"), "content": datasets.Value("string")}
    image_feature: Any = datasets.Value("string") if all_remote else datasets.Image()
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "messages": datasets.List(message),
            "images": datasets.List(image_feature),
        }
    )

    def image_value(record: Record) -> Any:
        ref = refs[record.image]
        if all_remote:
            return ref
        return {"bytes": (stage / ref).read_bytes(), "path": ref}

    splits = {
        name: datasets.Dataset.from_list([hf_row(r, image_value(r)) for r in recs], features=features)
        for name, recs in by_split.items()
    }
    datasets.DatasetDict(splits).save_to_disk(str(stage))


def export_records(
    records: Sequence[Record],
    out_dir: Path,
    *,
    fmt: Format,
    name: str = "gap",
    fetch_images: bool = False,
    manifest: Mapping[str, Any] | None = None,
    show_progress: bool = False,
    read_object: Callable[[str], bytes] | None = None,
) -> ExportResult:
    """Write ``records`` to ``out_dir`` in format ``fmt``; the folder appears complete or not at all.

    ``name`` prefixes the LLaMA-Factory dataset names (``<name>_<split>``). ``manifest`` adds
    provenance (source, theta, seed, ...) to ``export.json``.
    ``read_object`` reads ``s3://`` images (see :func:`gap.data._images.place_images`).
    """
    _check(records, fmt)
    out_dir = Path(out_dir)
    splits = _ordered_splits(records)
    with staged_dir(out_dir) as stage:
        sources = [(r.image, r.image_id) for r in records]
        with progress_bar("images", len({r.image for r in records}), enabled=show_progress) as advance:
            refs = place_images(sources, stage, fetch=fetch_images, advance=advance, read_object=read_object)
        exported = [dataclasses.replace(r, image=refs[r.image]) for r in records]
        write_records(stage / RECORDS_FILE, exported)
        by_split = {s: [r for r in records if r.split == s] for s in splits}
        files = [RECORDS_FILE]
        if fmt == "hf":
            _write_hf(stage, by_split, refs)
            files.append("dataset_dict.json")
        else:
            build = _ROW_BUILDERS[fmt]
            for split, recs in by_split.items():
                rows = [build(r, refs[r.image]) for r in recs]
                atomic_write_json(stage / split_file(fmt, split), rows, lines=fmt == "swift")
                files.append(split_file(fmt, split))
            if fmt == "sharegpt":
                info = {f"{name}_{split}": dataset_info_entry(split_file(fmt, split)) for split in splits}
                atomic_write_json(stage / "dataset_info.json", info)
                files.append("dataset_info.json")
        local = sum(1 for ref in set(refs.values()) if not is_url(ref))
        remote = len(set(refs.values())) - local
        document = {
            "gap_export": EXPORT_SCHEMA,
            "format": fmt,
            "name": name,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "gap_version": gap_version(),
            "splits": {s: {"file": split_file(fmt, s), "records": len(by_split[s])} for s in splits},
            "images": {"local": local, "remote": remote},
            **dict(manifest or {}),
        }
        atomic_write_json(stage / MANIFEST_FILE, document)
        files.append(MANIFEST_FILE)
    return ExportResult(
        out_dir=out_dir,
        format=fmt,
        splits={s: len(by_split[s]) for s in splits},
        files=tuple(files),
        images_local=local,
        images_remote=remote,
    )


def export_records_to(store: Store, records: Sequence[Record], **options: Any) -> tuple[ExportResult, str]:
    """:func:`export_records` into ``store``; returns the result and where the export now is.

    A local folder is written in place (atomically); object storage gets the export built in a local
    staging folder and uploaded whole, ``export.json`` last, so a reader that finds the manifest finds
    every file. The result's ``out_dir`` is then gone: only the returned location stays.
    """
    if isinstance(store, LocalStore):
        result = export_records(records, store.root, **options)
        return result, str(result.out_dir)
    with tempfile.TemporaryDirectory(prefix="gap-export-") as scratch:
        result = export_records(records, Path(scratch) / "export", **options)
        store.put_tree(result.out_dir, last=MANIFEST_FILE)
    return result, store.url()


def read_manifest(out_dir: Path) -> dict[str, Any]:
    """The ``export.json`` of an export folder."""
    data = read_json(Path(out_dir) / MANIFEST_FILE)
    if not isinstance(data, dict) or data.get("gap_export") != EXPORT_SCHEMA:
        raise InputError(f"{out_dir} is not a GAP export (no usable {MANIFEST_FILE})")
    return data


def push_to_hub(out_dir: Path, repo_id: str, *, private: bool = True) -> None:
    """Upload an ``hf`` export to the Hugging Face Hub; only ever called when the user asks."""
    if read_manifest(out_dir).get("format") != "hf":
        raise InputError("only an hf export can be pushed to the Hub; export with --format hf")
    import datasets

    try:
        datasets.load_from_disk(str(out_dir)).push_to_hub(repo_id, private=private)
    except Exception as exc:  # the Hub client raises many types; report one clear error
        raise GapError(f"pushing {out_dir} to the Hub as {repo_id} failed: {exc}") from exc


def save_records(records: Sequence[Record], out_dir: Path, *, manifest: Mapping[str, Any]) -> Path:
    """A records-only folder (``records.jsonl`` + ``export.json`` with format ``records``), atomically.

    Imports land here; ``gap data export --records DIR`` turns them into any consumer format.
    """
    if not records:
        raise InputError("no records to save")
    with staged_dir(Path(out_dir)) as stage:
        write_records(stage / RECORDS_FILE, records)
        splits = Counter(r.split for r in records)
        document = {
            "gap_export": EXPORT_SCHEMA,
            "format": "records",
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "gap_version": gap_version(),
            "splits": {s: {"file": RECORDS_FILE, "records": n} for s, n in sorted(splits.items())},
            "images": {
                "local": len({r.image for r in records if not is_url(r.image)}),
                "remote": len({r.image for r in records if is_url(r.image)}),
            },
            **dict(manifest),
        }
        atomic_write_json(stage / MANIFEST_FILE, document)
    return Path(out_dir)
