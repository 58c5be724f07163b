"""`gap eval answer`: a model's answers on an evaluation set, in a resumable RUN folder.

Local ``transformers:`` models answer in real batches through the game's own backend
(``TransformersModel.answer_batch``: left padding, one ``generate`` call per batch, greedy). HTTP
models (``openai:``) answer one request per item with bounded concurrency. The RUN folder holds
``run.json`` (model, adapter and its hash, decoding settings, data hash) and ``answers.jsonl``,
appended batch by batch and synced, so an interrupted run resumes where it stopped: items already
answered are never asked again (items whose answer failed are).
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from gap.data._export import gap_version
from gap.data._io import atomic_write_json, read_json
from gap.data._progress import progress_bar
from gap.errors import ConfigError, GapError, ImageError, InputError, ModelError
from gap.evaluate._items import ANSWERS_FILE, RUN_FILE, EvalItem, read_answers
from gap.models.base import ChatMessage, ImageInput, VisionChatModel

RUN_SCHEMA = 1


class BatchAnswerer(Protocol):
    """Answers a batch of items; an item that fails gets a :class:`GapError` in its place."""

    @property
    def name(self) -> str: ...

    def answer_batch(self, items: Sequence[EvalItem]) -> list[str | GapError]: ...


def read_image(location: str) -> ImageInput:
    """A local file or an http(s) URL as bytes with its MIME type."""
    mime = mimetypes.guess_type(location.split("?")[0])[0] or "image/jpeg"
    if location.startswith(("http://", "https://")):
        import httpx

        try:
            response = httpx.get(location, timeout=30.0, follow_redirects=True)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise InputError(f"cannot fetch the image {location}: {exc} (use --images-dir)") from exc
        return ImageInput(response.content, response.headers.get("content-type", mime).split(";")[0])
    try:
        return ImageInput(Path(location).read_bytes(), mime)
    except OSError as exc:
        raise InputError(f"cannot read the image {location!r}: {exc.strerror or exc}") from exc


class LocalBatchAnswerer:
    """A local VLM (plus an optional LoRA adapter) answering a whole batch in one ``generate`` call.

    It is the game's backend: :meth:`~gap.models.transformers_backend.TransformersModel.answer_batch`
    builds the prompts, pads, generates and decodes for both, with no deadline here.
    """

    def __init__(
        self, path: str, *, adapter: str | None = None, max_new_tokens: int = 128, device: str | None = None
    ) -> None:
        from gap.models.transformers_backend import TransformersModel

        self.model = TransformersModel(
            path, timeout=None, max_new_tokens=max_new_tokens, device=device, adapter=adapter
        )

    @property
    def name(self) -> str:
        return self.model.name

    def answer_batch(self, items: Sequence[EvalItem]) -> list[str | GapError]:
        """One ``generate`` call for the items whose image opens; the others get their error."""
        from gap.models.transformers_backend import AnswerRequest

        results: list[str | GapError] = []
        asked: list[tuple[int, AnswerRequest]] = []
        for index, item in enumerate(items):
            try:
                request = AnswerRequest(read_image(item.image), [ChatMessage("user", item.question)])
            except GapError as exc:
                results.append(exc)
            else:
                asked.append((index, request))
                results.append(ModelError("not answered"))
        answers = self.model.answer_batch([request for _, request in asked]) if asked else []
        for (index, _), answer in zip(asked, answers, strict=True):
            if isinstance(answer, ImageError):  # name the file: the backend only saw its bytes
                answer = ImageError(f"{items[index].image} is {answer.message}")
            results[index] = answer
        return results


class HttpAnswerer:
    """Any game backend (e.g. ``openai:``) answering one request per item, ``concurrency`` at a time."""

    def __init__(self, model: VisionChatModel, *, concurrency: int = 8) -> None:
        self.model = model
        self.concurrency = concurrency

    @property
    def name(self) -> str:
        return self.model.name

    def _one(self, item: EvalItem) -> str | GapError:
        try:
            return self.model.answer(read_image(item.image), [ChatMessage("user", item.question)])
        except GapError as exc:
            return exc

    def answer_batch(self, items: Sequence[EvalItem]) -> list[str | GapError]:
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(self._one, items))


def data_hash(items: Sequence[EvalItem]) -> str:
    """A hash of what is asked (ids, questions, references, images), not of any answer."""
    rows = [[i.id, i.question, i.reference, i.image] for i in items]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class AnswerResult:
    run: Path
    answered: int
    skipped: int
    failed: int


def _identity(run: dict[str, Any]) -> dict[str, Any]:
    """What must match for a RUN folder to be resumed (the batch size may change)."""
    decoding = {k: v for k, v in run["decoding"].items() if k not in ("batch_size", "concurrency")}
    keys = ("model", "adapter_hash", "data")
    return {**{key: run.get(key) for key in keys}, "decoding": decoding}


def answer_items(
    items: Sequence[EvalItem],
    answerer: BatchAnswerer,
    out: Path,
    *,
    batch_size: int,
    settings: dict[str, Any],
    show_progress: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> AnswerResult:
    """Answer every item not yet answered in ``out``, a batch at a time; see the module docstring.

    ``settings`` holds the run's model, adapter, adapter hash, decoding and data description;
    ``on_batch`` is called with the number of items answered so far, after each batch is on disk.
    """
    out = Path(out)
    run = {"gap_eval_run": RUN_SCHEMA, **settings, "data": {**settings["data"], "hash": data_hash(items)}}
    if (out / RUN_FILE).is_file():
        earlier = read_json(out / RUN_FILE)
        if _identity(earlier) != _identity(run):
            raise InputError(
                f"{out} holds a run of another model, adapter, decoding or data set; choose a new --out"
            )
    elif out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not a gap eval run; choose an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / RUN_FILE, {**run, "updated_at": datetime.now(UTC).isoformat(timespec="seconds")})
    done = {i.id for i in read_answers(out) if i.answer is not None}
    todo = [i for i in items if i.id not in done]
    _drop_cut_line(out / ANSWERS_FILE)
    failed = 0
    answered = 0
    with (
        progress_bar("answering", len(todo), enabled=show_progress) as advance,
        (out / ANSWERS_FILE).open("a", encoding="utf-8") as sink,
    ):
        for start in range(0, len(todo), max(1, batch_size)):
            batch = todo[start : start + batch_size]
            answers = answerer.answer_batch(batch)
            lines = []
            for item, answer in zip(batch, answers, strict=True):
                ok = isinstance(answer, str)
                failed += not ok
                row = replace(item, answer=answer if isinstance(answer, str) else None).to_dict()
                row["error"] = None if ok else str(answer)
                lines.append(json.dumps(row, ensure_ascii=False) + "\n")
            sink.write("".join(lines))
            sink.flush()
            os.fsync(sink.fileno())
            answered += len(batch)
            for _ in batch:
                advance()
            if on_batch is not None:
                on_batch(answered)
    return AnswerResult(out, answered=answered, skipped=len(items) - len(todo), failed=failed)


def _drop_cut_line(path: Path) -> None:
    """Remove a last line an interruption left unfinished, so appended lines start on their own."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def make_answerer(
    spec: str, *, adapter: str | None, max_new_tokens: int, concurrency: int, settings: Any
) -> BatchAnswerer:
    """A batched local answerer for ``transformers:``/folder specs, else the game's backend over HTTP."""
    kind, sep, target = spec.partition(":")
    if sep and kind == "transformers" and target:
        return LocalBatchAnswerer(target.strip(), adapter=adapter, max_new_tokens=max_new_tokens)
    if Path(spec).is_dir():
        return LocalBatchAnswerer(spec, adapter=adapter, max_new_tokens=max_new_tokens)
    if adapter:
        raise ConfigError(
            "--adapter runs with a transformers: model; for a served model load the adapter on the server "
            "(vllm serve BASE --enable-lora --lora-modules NAME=ADAPTER) and pass --model openai:NAME"
        )
    from gap.models.factory import load_model

    current = settings.model_copy(update={"max_new_tokens": max_new_tokens})
    return HttpAnswerer(load_model(spec, current), concurrency=concurrency)


def run_settings(
    spec: str,
    *,
    adapter: str | None,
    max_new_tokens: int,
    batch_size: int,
    concurrency: int,
    source: Path,
    split: str | None,
    items: int,
) -> dict[str, Any]:
    """What ``run.json`` records about a run (``answer_items`` adds the data hash)."""
    from gap.models.transformers_backend import adapter_label

    label = adapter_label(adapter) if adapter else None
    return {
        "model": spec,
        "adapter": str(Path(adapter).resolve()) if adapter else None,
        "adapter_label": label,
        "adapter_hash": label.rpartition("@")[2] if label else None,
        "decoding": {
            "greedy": True,
            "max_new_tokens": max_new_tokens,
            "batch_size": batch_size,
            "concurrency": concurrency,
        },
        "data": {"source": str(source), "split": split, "items": items},
        "gap_version": gap_version(),
    }
