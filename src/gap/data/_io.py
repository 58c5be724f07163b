"""Atomic file and folder writes: a crash or a failure never leaves a half-written export behind.

Files and folders get the modes the umask allows, like any other tool's (see :mod:`gap._fs`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gap._fs import atomic_write_bytes, make_temp_dir
from gap.errors import InputError

MANIFEST_FILE = "export.json"


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, value: Any, *, lines: bool = False) -> None:
    """Indented JSON, or JSON Lines when ``lines`` (one compact object per line)."""
    if lines:
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in value)
    else:
        text = json.dumps(value, ensure_ascii=False, indent=2) + "\n"
    atomic_write_text(path, text)


@contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """Yield an empty staging folder that replaces ``target`` only if the block succeeds.

    ``target`` may be missing, empty, or an earlier GAP export (it has ``export.json``); anything else
    is refused rather than overwritten.
    """
    target = Path(target).resolve()
    if target.exists() and (
        not target.is_dir() or (any(target.iterdir()) and not (target / MANIFEST_FILE).is_file())
    ):
        raise InputError(f"{target} exists and is not an earlier GAP export; choose an empty or new folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = make_temp_dir(target.parent, prefix=f".{target.name}.staging-")
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old: Path | None = None
    if target.exists():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
        old.rmdir()
        os.replace(target, old)
    os.replace(stage, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc})") from None


def read_jsonl(path: Path) -> list[Any]:
    rows: list[Any] = []
    try:
        with Path(path).open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise InputError(f"{path}:{number}: not JSON ({exc.msg})") from None
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    return rows
