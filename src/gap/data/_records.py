"""The canonical record: one kept round (image, its turns up to the kept one, the reference answer).

Every exporter, the validator, the card and a later ``gap train``/``gap eval`` read these records, so
their JSON form is stable: sorted keys, a ``schema`` number, unknown keys refused. Message texts never
contain the ``<image>`` placeholder; exporters add it where each consumer wants it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from gap.data._images import is_url
from gap.data._io import atomic_write_text
from gap.errors import InputError
from gap.storage import is_s3_url

SCHEMA = 1
IMAGE_TOKEN = "<image>"
RECORDS_FILE = "records.jsonl"

Role = Literal["user", "assistant"]
ReferenceSource = Literal["player", "model", "dataset"]

_IMAGE_TOKEN_RE = re.compile(r"\s*<image>\s*", re.IGNORECASE)


def strip_image_tokens(text: str) -> str:
    """``text`` without any ``<image>`` placeholder, so no consumer counts one image twice."""
    return _IMAGE_TOKEN_RE.sub(" ", text).strip()


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message about the record's image."""

    role: Role
    text: str


@dataclass(frozen=True, slots=True)
class Provenance:
    """Who and what produced a record, so a fine-tuning set can be audited and rebuilt."""

    source: str
    """Where the record comes from: ``gap`` (this game's database) or an import format (``gap-vqa``)."""
    players: tuple[str, ...] = ()
    """Ids of the players who flagged the answer (several after near-duplicate merging)."""
    posterior: float | None = None
    """P(model wrong | verdicts) of the kept turn; the largest one after merging."""
    theta: float | None = None
    """The threshold the turn passed."""
    model: str | None = None
    """The game's model, whose answer was judged wrong."""
    reference_source: ReferenceSource = "dataset"
    reference_model: str | None = None
    reference_prompt: str | None = None
    """Version of the prompt that asked the reference model, when a model wrote the answer."""
    asked_at: str | None = None
    judged_at: str | None = None
    referenced_at: str | None = None
    turn_ids: tuple[str, ...] = ()
    """Database turns behind the record: the kept one first, then any merged into it."""
    hinted: bool = False
    """The kept question was the round's suggested question (`GAP_HINTS`), asked as suggested."""


@dataclass(frozen=True, slots=True)
class Record:
    """One training conversation about one image; the last message is the reference answer.

    ``image`` is an absolute local path, an ``http(s)`` URL or an ``s3://`` object (S3 storage);
    ``image_id`` groups records of the same image (splits never separate them). ``rejected`` is the
    answer judged wrong, kept for preference tuning. ``split`` is the split this record belongs to
    (``train`` unless assigned otherwise).
    """

    id: str
    image: str
    image_id: str
    messages: tuple[Message, ...]
    provenance: Provenance
    rejected: str | None = None
    split: str = "train"
    merged_questions: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.id:
            raise InputError("a record needs an id")
        if not self.messages or len(self.messages) % 2:
            raise InputError(f"record {self.id}: messages must be user/assistant pairs")
        for index, message in enumerate(self.messages):
            expected = "user" if index % 2 == 0 else "assistant"
            if message.role != expected:
                raise InputError(
                    f"record {self.id}: message {index} should be {expected}, not {message.role}"
                )

    @property
    def question(self) -> str:
        """The kept question: the last user message."""
        return self.messages[-2].text

    @property
    def answer(self) -> str:
        """The reference answer: the last assistant message."""
        return self.messages[-1].text

    def to_dict(self) -> dict[str, Any]:
        prov = self.provenance
        return {
            "schema": SCHEMA,
            "id": self.id,
            "image": self.image,
            "image_id": self.image_id,
            "split": self.split,
            "messages": [{"role": m.role, "text": m.text} for m in self.messages],
            "rejected": self.rejected,
            "merged_questions": list(self.merged_questions),
            "provenance": {
                "source": prov.source,
                "players": list(prov.players),
                "posterior": prov.posterior,
                "theta": prov.theta,
                "model": prov.model,
                "reference_source": prov.reference_source,
                "reference_model": prov.reference_model,
                "reference_prompt": prov.reference_prompt,
                "asked_at": prov.asked_at,
                "judged_at": prov.judged_at,
                "referenced_at": prov.referenced_at,
                "turn_ids": list(prov.turn_ids),
                "hinted": prov.hinted,
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Record:
        """The record ``to_dict`` wrote; a newer schema or a malformed entry is an :class:`InputError`."""
        try:
            if data.get("schema") != SCHEMA:
                raise InputError(
                    f"unsupported record schema {data.get('schema')!r} (this GAP reads {SCHEMA})"
                )
            prov = dict(data["provenance"])
            source = prov.get("reference_source", "dataset")
            if source not in get_args(ReferenceSource):
                raise InputError(f"unknown reference_source {source!r}")
            provenance = Provenance(
                source=str(prov["source"]),
                players=tuple(prov.get("players", ())),
                posterior=prov.get("posterior"),
                theta=prov.get("theta"),
                model=prov.get("model"),
                reference_source=source,
                reference_model=prov.get("reference_model"),
                reference_prompt=prov.get("reference_prompt"),
                asked_at=prov.get("asked_at"),
                judged_at=prov.get("judged_at"),
                referenced_at=prov.get("referenced_at"),
                turn_ids=tuple(prov.get("turn_ids", ())),
                hinted=bool(prov.get("hinted", False)),
            )
            return cls(
                id=str(data["id"]),
                image=str(data["image"]),
                image_id=str(data["image_id"]),
                messages=tuple(Message(m["role"], m["text"]) for m in data["messages"]),
                provenance=provenance,
                rejected=data.get("rejected"),
                split=str(data.get("split", "train")),
                merged_questions=tuple(data.get("merged_questions", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"malformed record {data.get('id', '?')!r}: {exc!r}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)


def write_records(path: Path, records: Iterable[Record]) -> int:
    """Write ``records`` as JSON lines atomically (temp file + rename); returns how many."""
    lines = [record.to_json() for record in records]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def iter_records(path: Path) -> Iterator[Record]:
    """The records in a ``records.jsonl`` file (or in the one inside a folder).

    Relative image paths are resolved against the file's folder.
    """
    path = Path(path)
    if path.is_dir():
        path = path / RECORDS_FILE
    if not path.is_file():
        raise InputError(f"no records file at {path}")
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{number}: not JSON ({exc.msg})") from None
            record = Record.from_dict(data)
            image = record.image
            if not is_url(image) and not is_s3_url(image) and not Path(image).is_absolute():
                # Exports store image paths relative to their folder; callers get usable paths.
                record = dataclasses.replace(record, image=str((path.parent / record.image).resolve()))
            yield record


def read_records(path: Path) -> list[Record]:
    return list(iter_records(path))
