"""Check an export before anyone trains on it; every problem names the record it is in.

What is checked, per record: the structure (user/assistant turns, ending with an answer), unique ids,
as many ``<image>`` placeholders as images (where the consumer expects them; none at all in the ``hf``
format, whose consumer inserts them), that every local image exists and decodes, that no question or
answer is empty, and, given a tokenizer, that no sample is longer than ``max_tokens``: a sample cut by
a trainer's cutoff loses image tokens, the usual cause of "image features and image tokens do not
match" in LLaMA-Factory.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image as PILImage

from gap.data._exporters import FORMATS
from gap.data._images import is_url
from gap.data._io import MANIFEST_FILE, read_json, read_jsonl
from gap.data._progress import progress_bar
from gap.data._records import IMAGE_TOKEN, RECORDS_FILE, iter_records
from gap.errors import ConfigError, InputError

RECORDS = "records"
Severity = Literal["error", "warning"]
Placement = Literal["first", "anywhere", "implicit"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding, attached to a record id (``-`` for the export as a whole)."""

    record_id: str
    split: str
    check: str
    message: str
    severity: Severity = "error"


@dataclass(frozen=True)
class ValidationReport:
    directory: Path
    format: str
    records: int
    problems: tuple[Problem, ...]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def by_check(self) -> dict[str, int]:
        return dict(Counter(p.check for p in self.problems))


@dataclass(frozen=True, slots=True)
class Sample:
    """A row of any format, normalised: ``(role, text)`` messages and image references."""

    id: str
    split: str
    messages: tuple[tuple[str, str], ...]
    images: tuple[Any, ...]
    placement: Placement
    problems: tuple[Problem, ...] = field(default=())


# --- reading each format ------------------------------------------------------------------------


def _bad(row_id: str, split: str, message: str) -> Sample:
    return Sample(row_id, split, (), (), "anywhere", (Problem(row_id, split, "structure", message),))


def _row_id(row: Any, index: int) -> str:
    value = row.get("id") if isinstance(row, dict) else None
    return str(value) if value not in (None, "") else f"#{index}"


def _llava_sample(row: Any, index: int, split: str) -> Sample:
    rid = _row_id(row, index)
    if not isinstance(row, dict) or not isinstance(row.get("conversations"), list):
        return _bad(rid, split, "not an object with a 'conversations' list")
    roles = {"human": "user", "gpt": "assistant"}
    messages = []
    for turn in row["conversations"]:
        if (
            not isinstance(turn, dict)
            or turn.get("from") not in roles
            or not isinstance(turn.get("value"), str)
        ):
            return _bad(rid, split, "each conversation turn needs 'from' (human|gpt) and a string 'value'")
        messages.append((roles[turn["from"]], turn["value"]))
    image = row.get("image")
    images: tuple[Any, ...] = () if image is None else tuple(image) if isinstance(image, list) else (image,)
    return Sample(rid, split, tuple(messages), images, "first")


def _messages_sample(row: Any, index: int, split: str) -> Sample:
    rid = _row_id(row, index)
    if not isinstance(row, dict) or not isinstance(row.get("messages"), list):
        return _bad(rid, split, "not an object with a 'messages' list")
    messages = []
    for message in row["messages"]:
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            return _bad(rid, split, "each message needs 'role' and a string 'content'")
        messages.append((str(message.get("role")), message["content"]))
    images = row.get("images") or []
    if not isinstance(images, list):
        return _bad(rid, split, "'images' must be a list")
    return Sample(rid, split, tuple(messages), tuple(images), "anywhere")


def _read_split(directory: Path, fmt: str, split: str, file: str) -> Iterator[Sample]:
    path = directory / file
    if fmt == "hf":
        import datasets

        try:
            dataset = datasets.load_from_disk(str(directory))[split]
        except (FileNotFoundError, KeyError, ValueError) as exc:
            raise InputError(f"cannot load the hf split {split!r} from {directory}: {exc}") from None
        if isinstance(dataset.features.get("images"), datasets.List) and isinstance(
            dataset.features["images"].feature, datasets.Image
        ):
            dataset = dataset.cast_column("images", datasets.List(datasets.Image(decode=False)))
        for index, row in enumerate(dataset):
            sample = _messages_sample(row, index, split)
            yield Sample(sample.id, split, sample.messages, sample.images, "implicit", sample.problems)
        return
    rows = read_jsonl(path) if fmt == "swift" else read_json(path)
    if not isinstance(rows, list):
        raise InputError(f"{path} must hold a JSON list of records")
    build = _llava_sample if fmt == "llava" else _messages_sample
    for index, row in enumerate(rows):
        yield build(row, index, split)


def _records_samples(directory: Path) -> Iterator[Sample]:
    """Canonical records, checked like the ``hf`` format: images listed apart from the text."""
    for record in iter_records(directory / RECORDS_FILE):
        messages = tuple((m.role, m.text) for m in record.messages)
        image = record.image if is_url(record.image) else str(Path(record.image).resolve())
        yield Sample(record.id, record.split, messages, (image,), "implicit")


def _detect(directory: Path) -> tuple[str, dict[str, str]]:
    """The format and ``{split: file}`` of an export: from ``export.json``, else from the files present."""
    manifest_path = directory / MANIFEST_FILE
    if manifest_path.is_file():
        manifest = read_json(manifest_path)
        fmt = manifest.get("format") if isinstance(manifest, dict) else None
        if fmt == "records":
            return fmt, {RECORDS: RECORDS_FILE}
        if fmt in FORMATS:
            return fmt, {name: entry["file"] for name, entry in manifest.get("splits", {}).items()}
    if (directory / "dataset_dict.json").is_file():
        return "hf", {name: name for name in read_json(directory / "dataset_dict.json").get("splits", [])}
    if (directory / "dataset_info.json").is_file():
        info = read_json(directory / "dataset_info.json")
        return "sharegpt", {key: entry["file_name"] for key, entry in info.items()}
    jsonl = sorted(directory.glob("*.jsonl"))
    if jsonl:
        return "swift", {p.stem: p.name for p in jsonl if p.name != "records.jsonl"}
    json_files = sorted(p for p in directory.glob("*.json") if p.name != MANIFEST_FILE)
    if json_files:
        return "llava", {p.stem: p.name for p in json_files}
    raise InputError(f"{directory} holds no export this tool recognises")


# --- checks -------------------------------------------------------------------------------------


def _structure(sample: Sample) -> list[Problem]:
    problem = None
    roles = [role for role, _ in sample.messages]
    if not roles:
        problem = "no messages"
    elif any(role != ("user" if i % 2 == 0 else "assistant") for i, role in enumerate(roles)):
        problem = f"roles must alternate user/assistant from a user turn, got {roles}"
    elif roles[-1] != "assistant":
        problem = "the last message must be the answer (assistant)"
    return [Problem(sample.id, sample.split, "structure", problem)] if problem else []


def _empty(sample: Sample) -> list[Problem]:
    out = []
    for index, (role, text) in enumerate(sample.messages):
        if not text.replace(IMAGE_TOKEN, "").strip():
            check = "empty-answer" if role == "assistant" else "empty-question"
            out.append(Problem(sample.id, sample.split, check, f"message {index} ({role}) is empty"))
    return out


def _image_tokens(sample: Sample) -> list[Problem]:
    counts = [text.count(IMAGE_TOKEN) for _, text in sample.messages]
    total, expected = sum(counts), len(sample.images)
    if sample.placement == "implicit":
        if total:
            return [
                Problem(
                    sample.id,
                    sample.split,
                    "image-tokens",
                    f"{total} literal {IMAGE_TOKEN} in the text; this format's loader adds one per image "
                    "itself, so the model would see more placeholders than images",
                )
            ]
        return []
    if total != expected:
        return [
            Problem(
                sample.id,
                sample.split,
                "image-tokens",
                f"{total} {IMAGE_TOKEN} placeholder(s) for {expected} image(s)",
            )
        ]
    if sample.placement == "first" and expected and counts[0] != expected:
        return [
            Problem(sample.id, sample.split, "image-tokens", f"{IMAGE_TOKEN} must be in the first human turn")
        ]
    return []


class _ImageChecker:
    """Opens each distinct image once; remembers what it found."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._cache: dict[Any, tuple[str | None, PILImage.Image | None]] = {}

    def _open(self, data: bytes | None, path: Path | None) -> PILImage.Image:
        source: Any = io.BytesIO(data) if data is not None else path
        with PILImage.open(source) as img:
            img.load()
            return img.convert("RGB")

    def check(self, ref: Any) -> tuple[str | None, str | None, PILImage.Image | None]:
        """``(check, message, image)``: a failed check name and message, or the decoded image."""
        data: bytes | None = None
        name: Any = ref
        if isinstance(ref, dict):
            data, name = ref.get("bytes"), ref.get("path")
        key = name if data is None else ("bytes", hash(data))
        if key in self._cache:
            message, image = self._cache[key]
            return ("image-unreadable" if message else None), message, image
        if data is None and (not isinstance(name, str) or not name):
            return "image-missing", f"image reference {ref!r} is not a path", None
        if data is None and is_url(name):
            return "image-remote", f"{name} is remote and was not checked", None
        path = None if data is not None else (self.directory / name)
        if path is not None and not path.is_file():
            return "image-missing", f"{name} does not exist (relative to {self.directory})", None
        try:
            image = self._open(data, path)
        except Exception as exc:  # PIL raises many types for broken files
            self._cache[key] = (f"{name} does not open: {exc}", None)
            return "image-unreadable", f"{name} does not open: {exc}", None
        self._cache[key] = (None, image)
        return None, None, image


# --- token lengths ------------------------------------------------------------------------------


def _structured(sample: Sample, images: Sequence[PILImage.Image | None]) -> tuple[list[dict[str, Any]], bool]:
    """Chat messages with image parts where the placeholders are; False if an image was unavailable."""
    complete = True
    pending = list(images)
    out: list[dict[str, Any]] = []

    def image_part() -> dict[str, Any] | None:
        nonlocal complete
        img = pending.pop(0) if pending else None
        if img is None:
            complete = False
            return None
        return {"type": "image", "image": img}

    for index, (role, text) in enumerate(sample.messages):
        parts: list[dict[str, Any]] = []
        if sample.placement == "implicit" and index == 0:
            parts.extend(p for p in (image_part() for _ in range(len(images))) if p)
        pieces = text.split(IMAGE_TOKEN)
        for n, piece in enumerate(pieces):
            if n > 0:
                part = image_part()
                if part:
                    parts.append(part)
            if piece.strip():
                parts.append({"type": "text", "text": piece})
        out.append({"role": role, "content": parts})
    return out, complete


class TokenCounter:
    """Counts the tokens a model's processor makes of a sample, image tokens included.

    ``model`` is a local model folder (or a hub id when online). A folder without an image processor
    falls back to its tokenizer and counts text only; the report says so.
    """

    def __init__(self, model: str) -> None:
        self.model = model
        self._processor: Any = None
        self.text_only = False

    def _load(self) -> Any:
        if self._processor is None:
            try:
                from transformers import AutoProcessor, AutoTokenizer
            except ImportError as exc:
                raise ConfigError(
                    f"--tokenizer needs transformers: pip install 'gap[local]' ({exc})"
                ) from None
            try:
                self._processor = AutoProcessor.from_pretrained(self.model)  # type: ignore[no-untyped-call]
            except Exception:
                try:
                    self._processor = AutoTokenizer.from_pretrained(self.model)
                except Exception as exc:
                    raise ConfigError(f"cannot load a tokenizer from {self.model!r}: {exc}") from None
            self.text_only = not hasattr(self._processor, "image_processor")
        return self._processor

    def count(self, messages: list[dict[str, Any]]) -> int:
        processor = self._load()
        if self.text_only:
            flat = [
                {"role": m["role"], "content": "".join(p.get("text", IMAGE_TOKEN) for p in m["content"])}
                for m in messages
            ]
            ids = processor.apply_chat_template(flat, tokenize=True)
        else:
            ids = processor.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        if ids and isinstance(ids[0], list):
            ids = ids[0]
        return len(ids)


# --- the whole check ----------------------------------------------------------------------------


def validate_export(
    directory: Path,
    *,
    max_tokens: int | None = None,
    tokenizer: str | None = None,
    show_progress: bool = False,
    counter_factory: Callable[[str], TokenCounter] = TokenCounter,
) -> ValidationReport:
    """Check every record of the export in ``directory``; see the module docstring for the checks."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory} is not a folder")
    if (max_tokens is None) != (tokenizer is None):
        raise InputError("--max-tokens and --tokenizer go together: the length depends on the tokenizer")
    fmt, files = _detect(directory)
    problems: list[Problem] = []
    if fmt == "sharegpt":
        problems.extend(_check_dataset_info(directory, files))
    if fmt == "records":
        samples = list(_records_samples(directory))
    else:
        samples = [s for split, file in files.items() for s in _read_split(directory, fmt, split, file)]
    counter = counter_factory(tokenizer) if tokenizer else None
    images = _ImageChecker(directory)
    seen: Counter[str] = Counter(s.id for s in samples)
    for rid in sorted(rid for rid, n in seen.items() if n > 1):
        problems.append(Problem(rid, "-", "duplicate-id", f"{seen[rid]} records share this id"))
    with progress_bar("validating", len(samples), enabled=show_progress) as advance:
        for sample in samples:
            problems.extend(_check_sample(sample, images, counter, max_tokens))
            advance()
    if counter is not None and counter.text_only:
        problems.append(
            Problem(
                "-",
                "-",
                "too-long",
                f"{tokenizer} has no image processor: image tokens not counted",
                "warning",
            )
        )
    return ValidationReport(directory, fmt, len(samples), tuple(problems))


def _check_sample(
    sample: Sample, images: _ImageChecker, counter: TokenCounter | None, max_tokens: int | None
) -> list[Problem]:
    if sample.problems:
        return list(sample.problems)
    found = _structure(sample) + _empty(sample) + _image_tokens(sample)
    decoded: list[PILImage.Image | None] = []
    for ref in sample.images:
        check, message, image = images.check(ref)
        decoded.append(image)
        if check:
            severity: Severity = "warning" if check == "image-remote" else "error"
            found.append(Problem(sample.id, sample.split, check, message or "", severity))
    if counter is not None and max_tokens is not None and not any(p.check == "structure" for p in found):
        messages, complete = _structured(sample, decoded)
        n = counter.count(messages)
        if n > max_tokens:
            found.append(
                Problem(
                    sample.id, sample.split, "too-long", f"{n} tokens > {max_tokens} (would be truncated)"
                )
            )
        elif not complete and not counter.text_only:
            found.append(
                Problem(
                    sample.id,
                    sample.split,
                    "too-long",
                    f"{n} tokens without the image (not available locally); the real length is larger",
                    "warning",
                )
            )
    return found


def _check_dataset_info(directory: Path, files: dict[str, str]) -> list[Problem]:
    path = directory / "dataset_info.json"
    if not path.is_file():
        return [Problem("-", "-", "dataset-info", "dataset_info.json is missing (LLaMA-Factory needs it)")]
    info = read_json(path)
    listed = {entry.get("file_name") for entry in info.values() if isinstance(entry, dict)}
    out = []
    for split, file in files.items():
        if file not in listed:
            out.append(Problem("-", split, "dataset-info", f"{file} is not registered in dataset_info.json"))
        elif not (directory / file).is_file():
            out.append(Problem("-", split, "dataset-info", f"{file} is listed but missing"))
    for entry in info.values():
        if isinstance(entry, dict) and entry.get("columns", {}).get("images") != "images":
            out.append(Problem("-", "-", "dataset-info", "an entry does not map the 'images' column"))
    return out
