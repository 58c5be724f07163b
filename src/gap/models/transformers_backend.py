"""A local Hugging Face VLM (a hub id or a folder) run in-process with ``transformers``.

torch and transformers are imported when the model is loaded, never when this module is imported, so
the base install works without the ``local`` extra. Setup problems (extra missing, model not found)
raise :class:`~gap.errors.ConfigError`; anything that goes wrong while answering raises
:class:`~gap.errors.ModelError`, translated here at the boundary. Concurrent answers share batched
``generate`` calls (:mod:`gap.models._batcher`); see docs/scale.md, "Local models batch".
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gap.errors import ConfigError, GapError, ImageError, InputError, ModelError, ModelTimeout
from gap.models._batcher import Batcher
from gap.models.base import ChatMessage, ImageInput

INSTALL_HINT = "pip install 'gap[local]'"

# Families whose processor wants a video processor, which needs torchvision (see STACK-NOTES).
_VIDEO_PROCESSOR_FAMILIES = {
    "qwen2_vl": "Qwen2VLProcessor",
    "qwen2_5_vl": "Qwen2_5_VLProcessor",
    "qwen3_vl": "Qwen3VLProcessor",
    "qwen3_vl_moe": "Qwen3VLProcessor",
}


@contextmanager
def _map_generation_errors(name: str) -> Iterator[None]:
    """Any foreign exception raised while answering becomes a :class:`ModelError`."""
    try:
        yield
    except GapError:
        raise
    except Exception as exc:  # the boundary: torch and transformers raise many unrelated types
        raise ModelError(f"{name} failed to answer: {type(exc).__name__}: {exc}") from exc


def import_stack() -> tuple[Any, Any]:
    """``(torch, transformers)``, or a :class:`ConfigError` that says what to install."""
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise ConfigError(f"local models need torch and transformers: {INSTALL_HINT} ({exc})") from exc
    return torch, transformers


def _is_torchvision_error(exc: BaseException) -> bool:
    """Torchvision missing, or a folder saved without a video processor (as the fallback below saves)."""
    message = str(exc).lower()
    return "torchvision" in message or "can't load video processor" in message


def _processor_without_video(transformers: Any, path: str, processor_class: str) -> Any:
    """The family's processor built from tokenizer + image processor, with no video processor.

    Without torchvision, ``AutoProcessor`` cannot build Qwen-VL processors because their video processor
    needs it. GAP never sends video, so a subclass that always passes ``video_processor=None`` is enough.
    """
    base = getattr(transformers, processor_class)

    class _ImageOnlyProcessor(base):  # type: ignore[misc, valid-type]
        def __init__(self, image_processor: Any = None, tokenizer: Any = None, **kwargs: Any) -> None:
            kwargs.pop("video_processor", None)
            super().__init__(
                image_processor=image_processor, tokenizer=tokenizer, video_processor=None, **kwargs
            )

    # save_pretrained records the class name; keep the family's so the folder still loads elsewhere.
    _ImageOnlyProcessor.__name__ = _ImageOnlyProcessor.__qualname__ = base.__name__
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    image_processor = transformers.AutoImageProcessor.from_pretrained(path)
    return _ImageOnlyProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=tokenizer.chat_template
    )


def load_processor(transformers: Any, path: str) -> Any:
    """``AutoProcessor`` for ``path``; the Qwen-VL workaround only on the torchvision error it is for."""
    try:
        return transformers.AutoProcessor.from_pretrained(path)
    except (ImportError, ValueError, OSError) as exc:
        if not _is_torchvision_error(exc):
            raise
        model_type = getattr(transformers.AutoConfig.from_pretrained(path), "model_type", None)
        processor_class = _VIDEO_PROCESSOR_FAMILIES.get(str(model_type))
        if processor_class is None:
            raise
        return _processor_without_video(transformers, path, processor_class)


ADAPTER_CONFIG = "adapter_config.json"


def adapter_label(path: str) -> str:
    """``<folder name>@<short hash>`` of a LoRA adapter folder: the same folder name retrained differs."""
    folder = Path(path)
    if not (folder / ADAPTER_CONFIG).is_file():
        raise ConfigError(
            f"{path!r} is not a LoRA adapter folder (no {ADAPTER_CONFIG}); `gap train` writes one"
        )
    digest = hashlib.sha256()
    for name in (ADAPTER_CONFIG, "adapter_model.safetensors", "adapter_model.bin"):
        if (folder / name).is_file():
            digest.update((folder / name).read_bytes())
    return f"{folder.resolve().name}@{digest.hexdigest()[:8]}"


def with_adapter(model: Any, adapter: str) -> Any:
    """``model`` wrapped by peft with the LoRA ``adapter`` (the game's backend and `gap eval answer`)."""
    try:
        import peft
    except ImportError as exc:
        raise ConfigError(f"serving a LoRA adapter needs peft: pip install 'gap[train]' ({exc})") from None
    try:
        return peft.PeftModel.from_pretrained(model, adapter)
    except Exception as exc:  # an adapter for another base model, broken weights
        raise ConfigError(f"cannot load the adapter {adapter!r}: {type(exc).__name__}: {exc}") from None


def _open_image(image: ImageInput) -> Any:
    """``image`` as an RGB PIL image; bytes PIL cannot decode are an :class:`ImageError`."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(image.data)) as opened:
            return opened.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:  # UnidentifiedImageError: OSError
        raise ImageError(f"not an image this machine can decode ({type(exc).__name__}: {exc})") from exc


def build_conversation(
    pil_image: Any, messages: list[ChatMessage], system: str | None, *, system_in_user: bool = False
) -> list[dict[str, Any]]:
    """Chat-template messages: the system prompt if any, then the history; the image rides in turn one.

    ``system_in_user`` puts the system prompt at the head of the first user message instead, for
    templates that refuse a system role: the prompt then still reaches the model, and a refusal can
    never single out the (instructed) answers that carry one.
    """
    if not messages or messages[0].role != "user":
        raise ModelError("the conversation must start with a user message (it carries the image)")
    conversation: list[dict[str, Any]] = []
    if system and not system_in_user:
        conversation.append({"role": "system", "content": [{"type": "text", "text": system}]})
    for index, message in enumerate(messages):
        text = f"{system}\n\n{message.text}" if system and system_in_user and index == 0 else message.text
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        if index == 0:
            content.insert(0, {"type": "image", "image": pil_image})
        conversation.append({"role": message.role, "content": content})
    return conversation


def _accepts_system_role(processor: Any) -> bool:
    """Whether the chat template renders a system message (some raise "System role not supported")."""
    probe = [
        {"role": "system", "content": [{"type": "text", "text": "probe"}]},
        {"role": "user", "content": [{"type": "text", "text": "probe"}]},
    ]
    try:
        processor.apply_chat_template(probe, add_generation_prompt=True, tokenize=False)
    except Exception:  # jinja's TemplateError from raise_exception, or a template bug: either way, no
        return False
    return True


@dataclass(frozen=True, slots=True)
class AnswerRequest:
    """One question for :meth:`TransformersModel.answer_batch`: what ``answer`` takes, and a deadline."""

    image: ImageInput
    messages: list[ChatMessage]
    system: str | None = None
    deadline: float | None = None
    """``time.monotonic()`` after which the answer is of no use; None: no limit."""


class TransformersModel:
    """A VLM loaded with ``AutoProcessor`` and ``AutoModelForImageTextToText``, answering greedily.

    Concurrent :meth:`answer` calls are gathered by one worker thread into batched ``generate`` calls
    (up to ``max_batch`` requests, waiting ``batch_window`` seconds after the first for company; left
    padding), so 8 players asking at once cost little more than one. :meth:`answer_batch` is the one
    generation path, used by that worker and by `gap eval answer`. A lock serialises loading and
    generation. ``timeout`` (None: no limit) counts from the call, queueing included; a caller whose
    time ran out before its batch started is dropped from it. ``device`` defaults to CUDA when
    available, else CPU.
    """

    def __init__(
        self,
        path_or_hub_id: str,
        *,
        timeout: float | None,
        max_new_tokens: int,
        device: str | None = None,
        adapter: str | None = None,
        batch_window: float = 0.005,
        max_batch: int = 8,
    ) -> None:
        self.path_or_hub_id = path_or_hub_id
        self.adapter = adapter
        # read now: a wrong folder fails at start, and every stored answer names the exact adapter
        self._adapter_label = adapter_label(adapter) if adapter else None
        self.timeout = timeout
        self.max_new_tokens = max_new_tokens
        self.device = device
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any, str] | None = None
        self._system_in_user = False
        self.batcher: Batcher[AnswerRequest, str] = Batcher(
            self.answer_batch, window_s=batch_window, max_batch=max_batch, name="gap-model-batcher"
        )

    @property
    def name(self) -> str:
        base = f"transformers:{self.path_or_hub_id}"
        return f"{base}+adapter:{self._adapter_label}" if self._adapter_label else base

    def load(self) -> None:
        """Load processor and weights now (idempotent), e.g. at server start rather than on the first turn."""
        with self._lock:
            self._load_locked()

    def _load_locked(self) -> tuple[Any, Any, str]:
        if self._loaded is not None:
            return self._loaded
        torch, transformers = import_stack()
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            processor = load_processor(transformers, self.path_or_hub_id)
            model = transformers.AutoModelForImageTextToText.from_pretrained(self.path_or_hub_id)
        except Exception as exc:  # missing folder, unknown architecture, broken weights: all unusable specs
            raise ConfigError(
                f"cannot load model {self.path_or_hub_id!r} (a local folder, or a hub id already in the "
                f"cache when HF_HUB_OFFLINE=1): {type(exc).__name__}: {exc}"
            ) from exc
        if self.adapter:
            model = with_adapter(model, self.adapter)
        model.to(device).eval()
        processor.tokenizer.padding_side = "left"  # right padding corrupts batched generation
        self._system_in_user = not _accepts_system_role(processor)
        self._loaded = (processor, model, device)
        return self._loaded

    def unload(self) -> None:
        """Let the weights be freed once nothing else holds this model: stop the batching thread
        (it holds the model) after the queued answers ran; a later answer starts it again."""
        self.batcher.close()

    def prompt_text(self, messages: list[ChatMessage], system: str | None = None) -> str:
        """The prompt string the chat template builds (image placeholders unexpanded), for inspection."""
        with self._lock:
            processor, _, _ = self._load_locked()
        conversation = build_conversation(None, messages, system, system_in_user=self._system_in_user)
        text: str = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        return text

    def answer(self, image: ImageInput, messages: list[ChatMessage], system: str | None = None) -> str:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        future = self.batcher.submit(AnswerRequest(image, messages, system, deadline))
        try:
            return future.result(timeout=self.timeout)
        except TimeoutError:
            if future.cancel():  # never started: it leaves the queue without costing the model anything
                busy = f"{self.name} stayed busy with other answers for {self.timeout:g} s"
                raise ModelTimeout(busy) from None
            raise ModelTimeout(f"{self.name} wrote no answer within {self.timeout:g} s") from None
        except InputError as exc:  # e.g. bytes that are no image: for the game, the model failed to answer
            raise ModelError(f"{self.name} failed to answer: {exc}") from exc

    def answer_batch(self, requests: Sequence[AnswerRequest]) -> list[str | GapError]:
        """An answer or an error per request, in order: one ``generate`` call for every request whose
        image opens and whose deadline has not passed (the others get their own error)."""
        with self._lock:
            processor, model, device = self._load_locked()
            results: list[str | GapError] = [ModelError("not answered")] * len(requests)
            ready: list[tuple[int, list[dict[str, Any]]]] = []
            for index, request in enumerate(requests):
                try:
                    if request.deadline is not None and time.monotonic() >= request.deadline:
                        raise ModelTimeout(f"{self.name} ran out of time before generating")
                    picture = _open_image(request.image)
                    conversation = build_conversation(
                        picture, request.messages, request.system, system_in_user=self._system_in_user
                    )
                except GapError as exc:
                    results[index] = exc
                else:
                    ready.append((index, conversation))
            if ready:
                deadlines = [requests[index].deadline for index, _ in ready]
                answers = self._generate(processor, model, device, [c for _, c in ready], deadlines)
                for (index, _), answer in zip(ready, answers, strict=True):
                    results[index] = answer
            return results

    def _generate(
        self,
        processor: Any,
        model: Any,
        device: str,
        conversations: list[list[dict[str, Any]]],
        deadlines: list[float | None],
    ) -> list[str | GapError]:
        """One ``generate`` call for ``conversations``; if it fails, each alone, so only a culprit fails."""
        try:
            with _map_generation_errors(self.name):
                return self._generate_batch(processor, model, device, conversations, deadlines)
        except ModelError as exc:
            if len(conversations) == 1:
                return [exc]
        return [
            self._generate(processor, model, device, [conversation], [deadline])[0]
            for conversation, deadline in zip(conversations, deadlines, strict=True)
        ]

    def _generate_batch(
        self,
        processor: Any,
        model: Any,
        device: str,
        conversations: list[list[dict[str, Any]]],
        deadlines: list[float | None],
    ) -> list[str | GapError]:
        import torch

        inputs = processor.apply_chat_template(
            conversations,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs={"padding": True},
        ).to(device)
        limits: dict[str, float] = {}
        if all(deadline is not None for deadline in deadlines):
            # the batch runs for its latest caller; the others stop waiting at their own deadline
            remaining = max(d for d in deadlines if d is not None) - time.monotonic()
            if remaining <= 0:
                timeout = ModelTimeout(f"{self.name} ran out of time before generating")
                return [timeout for _ in conversations]
            limits["max_time"] = remaining
        config = model.generation_config
        with torch.inference_mode():
            output = model.generate(
                **inputs,
                do_sample=False,
                max_new_tokens=self.max_new_tokens,
                # the model's own minimum wins (the tiny model forces a few tokens); otherwise at least one
                min_new_tokens=max(1, config.min_new_tokens or 0),
                **limits,
            )
        new_tokens = output[:, inputs["input_ids"].shape[-1] :]
        texts = processor.batch_decode(new_tokens, skip_special_tokens=True)
        return [
            self._text_or_error(str(text).strip(), deadline, new_tokens.shape[-1])
            for text, deadline in zip(texts, deadlines, strict=True)
        ]

    def _text_or_error(self, text: str, deadline: float | None, tokens: int) -> str | GapError:
        if text:
            return text
        if deadline is not None and time.monotonic() >= deadline:
            return ModelTimeout(f"{self.name} wrote no text in time")
        return ModelError(f"{self.name} returned an empty answer ({tokens} special tokens only)")
