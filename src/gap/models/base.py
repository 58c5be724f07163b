"""The one interface every VLM backend implements: image + chat history (+ instruction) -> answer text.

The game, the reference-answer writer and the evaluator all talk to models through it, so a backend
is written once and serves all three.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of the conversation about an image; the image belongs to the first user message."""

    role: Literal["user", "assistant"]
    text: str


@dataclass(frozen=True, slots=True)
class ImageInput:
    """Raw bytes of an image and their MIME type (e.g. ``image/jpeg``)."""

    data: bytes
    mime_type: str


@runtime_checkable
class VisionChatModel(Protocol):
    """A VLM that answers the last user message about one image.

    ``messages`` alternate user/assistant and end with the user's new question. ``system`` is an
    optional system prompt: the game sends the same one on every turn (see :mod:`gap.game.taint`),
    the reference-answer writer its brief. Backends lay out system prompt, image and history the same
    way whatever the text says, so equal inputs up to the last message give equal request prefixes.
    Implementations raise :class:`gap.errors.ModelTimeout` past their timeout and
    :class:`gap.errors.ModelError` on any other failure; they never return an empty string.
    """

    @property
    def name(self) -> str:
        """A stable identifier of the model, recorded with every answer."""
        ...

    def answer(self, image: ImageInput, messages: list[ChatMessage], system: str | None = None) -> str: ...
