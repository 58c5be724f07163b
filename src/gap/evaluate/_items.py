"""Evaluation items, read from every input `gap eval` accepts.

An item is one question about one image with a reference answer and, once a model has answered, the
model's answer. Inputs: a RUN folder of `gap eval answer` (``answers.jsonl``), a GAP export or records
folder (its ``records.jsonl``, optionally one split), the authors' GAP-VQA ``val.json`` unchanged
(``modelAnswer`` is the answer, ``correctAnswer`` the reference), or JSON / JSON Lines rows with
``question``, ``answer``, ``reference`` and optional ``image``, ``image_id``, ``id``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gap.data import RECORDS_FILE, QuestionType, Record, import_gap_vqa, iter_records, question_type
from gap.errors import InputError

ANSWERS_FILE = "answers.jsonl"
RUN_FILE = "run.json"


@dataclass(frozen=True, slots=True)
class EvalItem:
    """One evaluation question; ``answer`` is ``None`` until a model has answered it."""

    id: str
    question: str
    reference: str
    image: str
    image_id: str
    answer: str | None = None

    @property
    def type(self) -> QuestionType:
        return question_type(self.question)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: Record, *, answer: str | None = None) -> EvalItem:
        return cls(
            id=record.id,
            question=record.question,
            reference=record.answer,
            image=record.image,
            image_id=record.image_id,
            answer=answer,
        )


def _from_row(row: Any, where: str, index: int) -> EvalItem:
    if not isinstance(row, Mapping):
        raise InputError(f"{where}: item {index} is not an object")
    for key in ("question", "reference"):
        if not isinstance(row.get(key), str):
            raise InputError(f"{where}: item {index} lacks a text {key!r}")
    answer = row.get("answer")
    if answer is not None and not isinstance(answer, str):
        raise InputError(f"{where}: item {index} has a non-text 'answer'")
    image = str(row.get("image") or "")
    image_id = str(row.get("image_id") or image or f"item-{index}")
    return EvalItem(
        id=str(row.get("id", f"item-{index:05d}")),
        question=row["question"],
        reference=row["reference"],
        image=image,
        image_id=image_id,
        answer=answer,
    )


def _read_jsonl(path: Path) -> list[Any]:
    rows: list[Any] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{number}: not JSON ({exc.msg})") from None
    return rows


def _check_unique(items: Sequence[EvalItem], where: Path) -> list[EvalItem]:
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise InputError(f"{where}: item ids repeat; every item needs its own id")
    return list(items)


def _from_rows(rows: list[Any], path: Path) -> list[EvalItem]:
    if rows and isinstance(rows[0], Mapping) and "schema" in rows[0] and "messages" in rows[0]:
        return [EvalItem.from_record(Record.from_dict(row)) for row in rows]
    return [_from_row(row, str(path), index) for index, row in enumerate(rows)]


def load_items(path: Path, *, split: str | None = None, images_dir: Path | None = None) -> list[EvalItem]:
    """The items of ``path`` (see the module docstring for the accepted layouts), in file order.

    ``split`` keeps one split of a records folder; ``images_dir`` maps GAP-VQA image URLs to local files
    of the same name.
    """
    path = Path(path)
    if path.is_dir():
        if (path / ANSWERS_FILE).is_file():
            return _check_unique(read_answers(path), path)
        if not (path / RECORDS_FILE).is_file():
            raise InputError(
                f"{path} holds neither {ANSWERS_FILE} (a gap eval run) nor {RECORDS_FILE} "
                "(a gap data export or import)"
            )
        records = [r for r in iter_records(path) if split is None or r.split == split]
        if not records:
            raise InputError(f"{path} has no records" + (f" in split {split!r}" if split else ""))
        return _check_unique([EvalItem.from_record(r) for r in records], path)
    if not path.is_file():
        raise InputError(f"no such file or folder: {path}")
    if path.suffix == ".jsonl":
        return _check_unique(_from_rows(_read_jsonl(path), path), path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not JSON: {exc}") from None
    if isinstance(data, list) and data and isinstance(data[0], Mapping) and "imageLink" in data[0]:
        records = import_gap_vqa(path, images_dir=images_dir, split=split)
        return [EvalItem.from_record(r, answer=r.rejected) for r in records]
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of items")
    return _check_unique(_from_rows(data, path), path)


def read_answers(run: Path) -> list[EvalItem]:
    """The items of a RUN folder, the last line per id winning (a failed answer retried on resume).

    A last line cut short by an interruption is ignored.
    """
    path = Path(run) / ANSWERS_FILE
    items: dict[str, EvalItem] = {}
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) and not line.endswith("\n"):
                break  # the write an interruption cut short; that item is answered again
            raise InputError(f"{path}:{number}: not JSON") from None
        parsed = _from_row(row, str(path), number)
        items[parsed.id] = parsed
    return list(items.values())
