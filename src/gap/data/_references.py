"""Ask a reference VLM for the correct answer to questions the game's model got wrong.

The reference model sees the image, the round's conversation up to the kept question, and a system
prompt saying that a previous answer to the last question was judged wrong (and what it was). Jobs
run concurrently on a bounded thread pool; each is retried with backoff; every outcome, success or
final failure, is handed to ``on_outcome`` in the calling thread, so the caller can persist it at once
(a crash loses at most the requests in flight, and a rerun asks only what is still missing).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from gap.data._progress import progress_bar
from gap.errors import ConfigError, GapError
from gap.models.base import ChatMessage, ImageInput, VisionChatModel

PROMPT_VERSION = "reference-v1"

_SYSTEM = (
    "You write reference answers for a visual question answering dataset. Look at the image carefully. "
    "A previous answer to the user's last question was checked by a person and judged wrong:\n"
    "<previous_answer>\n{wrong}\n</previous_answer>\n"
    "Answer the last question correctly and precisely, in one to three complete sentences, as if you "
    "were answering it for the first time. Be exact about counts, colours, positions, text and whether "
    "things are present. Do not mention the previous answer or that it was wrong."
)


def reference_system_prompt(wrong_answer: str | None) -> str:
    """The system prompt for one job (the version is :data:`PROMPT_VERSION`)."""
    return _SYSTEM.format(wrong=(wrong_answer or "(no answer text was recorded)").strip())


@dataclass(frozen=True, slots=True)
class ReferenceJob:
    """One question to answer: the image, the conversation ending with the kept question."""

    turn_id: str
    image: str
    """Where the image is: a local file, or an ``s3://`` URL (named in errors)."""
    mime_type: str
    messages: tuple[ChatMessage, ...]
    wrong_answer: str | None
    read: Callable[[], bytes] | None = None
    """Reads the image from the game's image store; None: ``image`` is a local file."""

    def load_image(self) -> ImageInput:
        """Read the image when the job runs, so queued jobs hold no image bytes."""
        data = self.read() if self.read is not None else Path(self.image).read_bytes()
        return ImageInput(data, self.mime_type)


@dataclass(frozen=True, slots=True)
class ReferenceOutcome:
    turn_id: str
    text: str | None
    error: str | None
    attempts: int

    @property
    def ok(self) -> bool:
        return self.text is not None


def ask_reference(
    model: VisionChatModel,
    job: ReferenceJob,
    *,
    retries: int,
    backoff: float,
    sleep: Callable[[float], None] = time.sleep,
) -> ReferenceOutcome:
    """Ask once plus up to ``retries`` more times on :class:`GapError` (timeouts included)."""
    system = reference_system_prompt(job.wrong_answer)
    try:
        image = job.load_image()
    except (OSError, GapError) as exc:
        return ReferenceOutcome(job.turn_id, None, f"ImageError: cannot read {job.image}: {exc}", 0)
    error = ""
    for attempt in range(1, retries + 2):
        try:
            text = model.answer(image, list(job.messages), system=system).strip()
        except GapError as exc:
            error = f"{type(exc).__name__}: {exc.message}"
        else:
            if text:
                return ReferenceOutcome(job.turn_id, text, None, attempt)
            error = "ModelError: empty answer"
        if attempt <= retries:
            sleep(backoff * 2 ** (attempt - 1))
    return ReferenceOutcome(job.turn_id, None, error, retries + 1)


def run_reference_jobs(
    model: VisionChatModel,
    jobs: Iterable[ReferenceJob],
    *,
    on_outcome: Callable[[ReferenceOutcome], None],
    concurrency: int = 4,
    retries: int = 2,
    backoff: float = 1.0,
    show_progress: bool = False,
) -> list[ReferenceOutcome]:
    """Run ``jobs`` with at most ``concurrency`` requests in flight; outcomes in completion order."""
    if concurrency < 1 or retries < 0 or backoff < 0:
        raise ConfigError("concurrency must be >= 1, retries and backoff >= 0")
    pending_jobs = list(jobs)
    outcomes: list[ReferenceOutcome] = []
    with (
        progress_bar("reference answers", len(pending_jobs), enabled=show_progress) as advance,
        ThreadPoolExecutor(max_workers=concurrency) as pool,
    ):
        queue = iter(pending_jobs)
        running: set[Future[ReferenceOutcome]] = set()

        def submit_next() -> None:
            job = next(queue, None)
            if job is not None:
                running.add(pool.submit(ask_reference, model, job, retries=retries, backoff=backoff))

        for _ in range(concurrency):
            submit_next()
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                running.discard(future)
                outcome = future.result()
                on_outcome(outcome)
                outcomes.append(outcome)
                advance()
                submit_next()
    return outcomes
