"""Records to rows, one small pure function per consumer format.

Each function takes a record and the image reference as it must appear in the export (a path relative
to the export folder, or a URL) and returns one row in the consumer's documented schema:

- LLaVA: ``{"id", "image", "conversations": [{"from": "human"|"gpt", "value"}]}``, ``<image>\\n`` once,
  at the start of the first human turn (LLaVA's ``image_folder`` is the export folder).
- LLaMA-Factory ShareGPT: ``{"messages": [{"role", "content"}], "images": [...]}``, one ``<image>`` per
  image, registered in ``dataset_info.json`` by :func:`dataset_info_entry`.
- ms-swift: the same ``messages`` + ``images`` shape, written as JSON Lines.
- Hugging Face / TRL: ``messages`` with plain-text content and no ``<image>`` (TRL's collator inserts one
  image placeholder per image before the first user message) and ``images``.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from gap.data._records import IMAGE_TOKEN, Record

Format = Literal["llava", "sharegpt", "swift", "hf"]
FORMATS: tuple[str, ...] = get_args(Format)


def llava_row(record: Record, image: str) -> dict[str, Any]:
    conversations = [
        {
            "from": "human" if message.role == "user" else "gpt",
            "value": f"{IMAGE_TOKEN}\n{message.text}" if index == 0 else message.text,
        }
        for index, message in enumerate(record.messages)
    ]
    return {"id": record.id, "image": image, "conversations": conversations}


def _tagged_messages(record: Record) -> list[dict[str, str]]:
    return [
        {"role": message.role, "content": f"{IMAGE_TOKEN}{message.text}" if index == 0 else message.text}
        for index, message in enumerate(record.messages)
    ]


def sharegpt_row(record: Record, image: str) -> dict[str, Any]:
    return {"id": record.id, "messages": _tagged_messages(record), "images": [image]}


def swift_row(record: Record, image: str) -> dict[str, Any]:
    return {"id": record.id, "messages": _tagged_messages(record), "images": [image]}


def hf_row(record: Record, image: Any) -> dict[str, Any]:
    """``image`` is whatever the ``datasets`` Image feature accepts (a path, a URL or ``{bytes, path}``)."""
    messages = [{"role": message.role, "content": message.text} for message in record.messages]
    return {"id": record.id, "messages": messages, "images": [image]}


def dataset_info_entry(file_name: str) -> dict[str, Any]:
    """LLaMA-Factory's ``dataset_info.json`` entry for a ShareGPT file with ``messages`` + ``images``."""
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
        },
    }
