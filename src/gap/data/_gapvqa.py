"""Import the authors' released GAP-VQA data (fraction-ai/GAP, Apache-2.0) as GAP records.

Two shapes are recognised: ``train.json`` (a list of ``{"id", "image", "conversations": [{"role",
"content"}]}``, LLaVA-like, with ``<image>`` repeated in every user turn of multi-turn items) and
``val.json`` (a list of ``{"imageLink", "question", "modelAnswer", "correctAnswer"}``). The repeated
placeholders are dropped: a record has one image, and each exporter writes its placeholder once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from gap.data._images import url_file_name
from gap.data._io import read_json
from gap.data._records import Message, Provenance, Record, Role, strip_image_tokens
from gap.errors import InputError

SOURCE = "gap-vqa"
_ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant"}


def _image(url: str, images_dir: Path | None) -> tuple[str, str]:
    """``(image, image_id)``: a local file of the same name when ``images_dir`` has it, else the URL."""
    name = url_file_name(url) or url
    image_id = Path(name).stem or name
    if images_dir is not None:
        local = images_dir / name
        if local.is_file():
            return str(local.resolve()), image_id
    return url, image_id


def _conversation(item: Any, index: int, split: str, images_dir: Path | None) -> Record:
    if not isinstance(item, dict) or not isinstance(item.get("conversations"), list) or "image" not in item:
        raise InputError(f"GAP-VQA item {index}: expected 'id', 'image' and 'conversations'")
    messages = []
    for turn in item["conversations"]:
        role = _ROLES.get(str(turn.get("role", turn.get("from"))))
        text = turn.get("content", turn.get("value"))
        if role is None or not isinstance(text, str):
            raise InputError(f"GAP-VQA item {item.get('id', index)}: a turn lacks role/content")
        messages.append(Message(cast(Role, role), strip_image_tokens(text)))
    image, image_id = _image(str(item["image"]), images_dir)
    return Record(
        id=f"gapvqa-{split}-{item.get('id', index)}",
        image=image,
        image_id=image_id,
        messages=tuple(messages),
        provenance=Provenance(source=SOURCE, reference_source="dataset"),
        split=split,
    )


def _val_item(item: Any, index: int, split: str, images_dir: Path | None) -> Record:
    keys = ("imageLink", "question", "correctAnswer")
    if not isinstance(item, dict) or any(not isinstance(item.get(k), str) for k in keys):
        raise InputError(f"GAP-VQA item {index}: expected {', '.join(keys)} and modelAnswer")
    image, image_id = _image(item["imageLink"], images_dir)
    return Record(
        id=f"gapvqa-{split}-{index:04d}",
        image=image,
        image_id=image_id,
        messages=(
            Message("user", strip_image_tokens(item["question"])),
            Message("assistant", item["correctAnswer"].strip()),
        ),
        provenance=Provenance(source=SOURCE, reference_source="dataset"),
        rejected=item.get("modelAnswer"),
        split=split,
    )


def import_gap_vqa(path: Path, *, images_dir: Path | None = None, split: str | None = None) -> list[Record]:
    """Records from a GAP-VQA file; ``split`` defaults to ``train`` for conversations, ``val`` for items.

    Image URLs stay URLs unless ``images_dir`` holds a file with the URL's file name.
    """
    data = read_json(Path(path))
    if not isinstance(data, list) or not data:
        raise InputError(f"{path} is not a non-empty JSON list")
    if images_dir is not None and not Path(images_dir).is_dir():
        raise InputError(f"image folder {images_dir} does not exist")
    first: Any = data[0]
    if isinstance(first, dict) and "conversations" in first:
        name = split or "train"
        return [_conversation(item, i, name, images_dir) for i, item in enumerate(data)]
    if isinstance(first, dict) and "imageLink" in first:
        name = split or "val"
        return [_val_item(item, i, name, images_dir) for i, item in enumerate(data)]
    raise InputError(f"{path} is neither GAP-VQA train.json (conversations) nor val.json (imageLink items)")


def import_files(
    paths: Sequence[Path], *, images_dir: Path | None = None, split: str | None = None
) -> list[Record]:
    """Records of several GAP-VQA files together; a record id found twice is an error."""
    records: list[Record] = []
    for path in paths:
        records.extend(import_gap_vqa(path, images_dir=images_dir, split=split))
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        raise InputError("the files share record ids; import them with different --split names")
    return records
