"""Helpers for the data tests: small PNG files and records built from them."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image as PILImage

from gap.data import Message, Provenance, Record

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]


def write_png(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    PILImage.new("RGB", size, colour).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return path


def make_record(
    rid: str,
    image: Path | str,
    image_id: str,
    turns: list[tuple[str, str]],
    *,
    players: tuple[str, ...] = ("p1",),
    posterior: float | None = 0.9,
    asked_at: str = "2026-11-01T10:00:00+00:00",
    split: str = "train",
) -> Record:
    messages = tuple(m for q, a in turns for m in (Message("user", q), Message("assistant", a)))
    return Record(
        id=rid,
        image=str(image),
        image_id=image_id,
        messages=messages,
        provenance=Provenance(
            source="gap",
            players=players,
            posterior=posterior,
            theta=0.8,
            model="openai:tiny",
            reference_source="model",
            reference_model="openai:reference",
            reference_prompt="reference-v1",
            asked_at=asked_at,
            turn_ids=(rid,),
        ),
        rejected="a wrong answer",
        split=split,
    )
