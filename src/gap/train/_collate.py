"""Batches for any VLM family through its own processor and chat template, with loss on answers only.

How the mask is found, family-agnostically: the chat template renders the conversation, and for each
assistant turn also the prefix up to that turn's generation prompt and up to its end; the characters
between those two prefixes are the answer (with the template's end-of-turn token). The tokenizer's
offsets map them to tokens of the unexpanded text, and the processor's expansion of the image
placeholder only shifts positions, since the image sits in the first user turn, before every answer.
The shift is verified token by token, so a template or processor that breaks these assumptions fails
with a clear error instead of training on a wrong mask. Prompt, image and padding positions get -100.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image as PILImage

from gap.errors import ConfigError
from gap.train._data import Example

IGNORE_INDEX = -100


def load_image(path: str, max_pixels: int) -> PILImage.Image:
    """The image in RGB, shrunk (aspect kept) to at most ``max_pixels`` pixels."""
    with PILImage.open(path) as opened:
        image = opened.convert("RGB")
    pixels = image.width * image.height
    if pixels > max_pixels:
        scale = (max_pixels / pixels) ** 0.5
        size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        image = image.resize(size, PILImage.Resampling.BICUBIC)
    return image


def conversation(example: Example) -> list[dict[str, Any]]:
    """Chat-template messages: the image once, at the head of the first user turn (never per turn)."""
    messages: list[dict[str, Any]] = []
    for index, (role, text) in enumerate(example.turns):
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        if index == 0:
            content.insert(0, {"type": "image"})
        messages.append({"role": role, "content": content})
    return messages


class AssistantOnlyCollator:
    """Turns examples into model inputs plus ``labels`` that cover assistant tokens only."""

    def __init__(self, processor: Any, *, max_pixels: int) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.max_pixels = max_pixels

    def _render(self, messages: list[dict[str, Any]], *, generation_prompt: bool = False) -> str:
        text: str = self.processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )
        return text

    def answer_spans(self, example: Example) -> tuple[str, list[tuple[int, int]]]:
        """The rendered text and the character span of each assistant turn in it."""
        messages = conversation(example)
        full = self._render(messages)
        spans = []
        for index, (role, _) in enumerate(example.turns):
            if role != "assistant":
                continue
            before = self._render(messages[:index], generation_prompt=True)
            after = self._render(messages[: index + 1])
            if not (full.startswith(after) and after.startswith(before)):
                raise ConfigError(
                    "this model's chat template renders a conversation differently from its prefixes "
                    "(e.g. it rewrites earlier turns), so the answer tokens cannot be located"
                )
            spans.append((len(before), len(after)))
        return full, spans

    def _text_labels(self, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
        """Token ids of the unexpanded text, and the same list with non-answer tokens set to -100."""
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids: list[int] = list(encoded["input_ids"])
        labels = [IGNORE_INDEX] * len(ids)
        for position, (start, _) in enumerate(encoded["offset_mapping"]):
            if any(lo <= start < hi for lo, hi in spans):
                labels[position] = ids[position]
        return ids, labels

    def __call__(self, examples: Sequence[Example]) -> dict[str, Any]:
        import torch

        texts: list[str] = []
        text_ids: list[list[int]] = []
        text_labels: list[list[int]] = []
        for example in examples:
            text, spans = self.answer_spans(example)
            ids, answer_only = self._text_labels(text, spans)
            texts.append(text)
            text_ids.append(ids)
            text_labels.append(answer_only)
        images = [[load_image(e.image, self.max_pixels)] for e in examples]
        previous_side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "right"
        try:
            batch = self.processor(
                text=texts, images=images, padding=True, add_special_tokens=False, return_tensors="pt"
            )
        finally:
            self.tokenizer.padding_side = previous_side
        labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
        for row, (ids, answer_labels) in enumerate(zip(text_ids, text_labels, strict=True)):
            length = int(batch["attention_mask"][row].sum())
            shift = length - len(ids)
            first = next((i for i, label in enumerate(answer_labels) if label != IGNORE_INDEX), len(ids))
            expanded = batch["input_ids"][row, first + shift : length].tolist()
            if shift < 0 or expanded != ids[first:]:
                raise ConfigError(
                    f"example {examples[row].id}: the processor's tokens after the image do not match the "
                    "tokenizer's, so the answer positions are unknown (is the image placeholder in the "
                    "first user turn of this chat template?)"
                )
            labels[row, first + shift : length] = torch.tensor(answer_labels[first:], dtype=labels.dtype)
        batch["labels"] = labels
        return dict(batch)

    def length(self, example: Example) -> int:
        """Tokens the model sees for ``example``, image tokens included (what ``cutoff`` limits)."""
        text, _ = self.answer_spans(example)
        encoded = self.processor(
            text=[text], images=[[load_image(example.image, self.max_pixels)]], add_special_tokens=False
        )
        return len(encoded["input_ids"][0])
