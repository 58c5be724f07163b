"""Model calls that cannot starve the server: their own bounded threads, a total deadline, a breaker.

Web routes share one thread pool (40 threads); a hung backend used to hold every one of them, so
``/api/me``, logins and pages waited behind questions. The game's questions await the model through
a :class:`ModelGate` instead: each answer runs in a worker thread counted against the backend's own
limit (``GAP_MODEL_CONCURRENCY``), never the shared one; the whole answer, queueing included, has
one deadline (``GAP_MODEL_TIMEOUT``); and after ``GAP_MODEL_BREAKER_FAILURES`` failures in a row
the circuit opens: questions get a 503 at once, with ``Retry-After``, until a probe succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar, cast

import anyio
import anyio.to_thread

from gap.config import Settings
from gap.errors import ModelError, ModelTimeout, ModelUnavailable
from gap.models.base import ChatMessage, ImageInput, VisionChatModel

Result = TypeVar("Result")


class CircuitState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class CircuitBreaker:
    """Closed; open after ``failures_to_open`` failures in a row; half-open after ``reset_s``.

    Half-open lets one call through as a probe: its success closes the circuit, its failure opens it
    again for another ``reset_s``. Used from the event loop only, so it needs no lock.
    """

    failures_to_open: int
    reset_s: float
    now: Callable[[], float] = time.monotonic
    state: CircuitState = CircuitState.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = field(default=False, repr=False)

    def before_call(self) -> None:
        """Let the call through, or raise :class:`ModelUnavailable` at once."""
        if self.state is CircuitState.OPEN:
            waited = self.now() - self.opened_at
            if waited < self.reset_s:
                raise self._unavailable(self.reset_s - waited)
            self.state = CircuitState.HALF_OPEN
        if self.state is CircuitState.HALF_OPEN:
            if self.probing:
                raise self._unavailable(self.reset_s)
            self.probing = True

    def succeeded(self) -> None:
        self.state, self.failures, self.probing = CircuitState.CLOSED, 0, False

    def failed(self) -> None:
        self.failures += 1
        if self.state is CircuitState.HALF_OPEN or self.failures >= self.failures_to_open:
            self.state, self.opened_at, self.probing = CircuitState.OPEN, self.now(), False

    def released(self) -> None:
        """A call let through ended without telling anything about the backend (e.g. cancelled)."""
        self.probing = False

    @staticmethod
    def _unavailable(retry_after: float) -> ModelUnavailable:
        return ModelUnavailable(
            "the model is not answering right now; please try again shortly", retry_after=retry_after
        )


class ModelGate:
    """Await a backend's answers off the shared thread pool, bounded, under one deadline each."""

    def __init__(
        self,
        model: Callable[[], VisionChatModel],
        *,
        timeout: float,
        max_concurrency: int,
        breaker: CircuitBreaker,
        on_answer: Callable[[float, str | None], None] | None = None,
    ) -> None:
        self.model = model
        self.on_answer = on_answer
        """Told each answer's seconds and its failure kind (None on success), e.g. for metrics."""
        self.timeout = timeout
        self.breaker = breaker
        self.max_concurrency = max_concurrency
        # Made on first use, inside the event loop: the model slots (calls to the backend at once),
        # and the gate's own threads, twice as many, since a thread stores its answer after its slot
        # is free again.
        self._slots: anyio.CapacityLimiter | None = None
        self._threads: anyio.CapacityLimiter | None = None
        self.in_flight = 0

    async def answer(
        self,
        image: ImageInput,
        messages: list[ChatMessage],
        system: str | None,
        model: Callable[[], VisionChatModel] | None = None,
    ) -> tuple[str, str]:
        """(answer, model name); :class:`ModelTimeout` past the deadline, :class:`ModelError` else.

        ``model`` answers instead of the gate's own (a session's round of collection has its model).
        """
        return await self.answer_then(image, messages, system, model, then=_pair)

    async def answer_then(
        self,
        image: ImageInput,
        messages: list[ChatMessage],
        system: str | None,
        model: Callable[[], VisionChatModel] | None,
        *,
        then: Callable[[str, str], Result],
    ) -> Result:
        """``then(answer, model name)``, run in the model's worker thread as soon as it answered.

        One thread hop for an answer and what is done with it (the game stores it), instead of two.
        Once ``then`` has begun it is seen through and its result served, even past the deadline: an
        answer being stored is not reported as lost. Its errors are not the backend's (the breaker
        counts the answer as a success) and propagate as they are.
        """
        try:
            self.breaker.before_call()
        except ModelUnavailable:
            if self.on_answer is not None:
                self.on_answer(0.0, "circuit_open")
            raise
        if self._slots is None or self._threads is None:
            self._slots = anyio.CapacityLimiter(self.max_concurrency)
            self._threads = anyio.CapacityLimiter(2 * self.max_concurrency)
        slots, loop = self._slots, asyncio.get_running_loop()
        handoff: _Handoff[Result] = _Handoff()
        slot = object()  # borrows one model slot, from queueing until the backend has answered
        holding = False

        def free_slot() -> None:  # on the event loop only, so ``holding`` needs no lock
            nonlocal holding
            if holding:
                holding = False
                slots.release_on_behalf_of(slot)

        began = time.perf_counter()

        def call() -> None:
            handoff.started = True
            chosen = (model or self.model)()
            try:
                text = chosen.answer(image, messages, system=system)
            finally:
                # The slot bounds calls to the backend, not the store after one: held through the
                # store (a write that may queue behind others), it capped questions at slots / store
                # time under load, while the backend sat idle.
                with contextlib.suppress(RuntimeError):  # the loop closed: the server stopped
                    loop.call_soon_threadsafe(free_slot)
            handoff.model_seconds = time.perf_counter() - began
            with handoff.lock:
                if handoff.abandoned:
                    return
                handoff.continued = True
            try:
                handoff.result = then(text, chosen.name)
            except BaseException as exc:
                handoff.error = exc
            finally:
                handoff.done.set()

        self.in_flight += 1
        error: str | None = None
        try:
            with anyio.fail_after(self.timeout):
                await slots.acquire_on_behalf_of(slot)
                holding = True
                await anyio.to_thread.run_sync(call, abandon_on_cancel=True, limiter=self._threads)
        except TimeoutError:
            with handoff.lock:
                handoff.abandoned = not handoff.continued
            if handoff.abandoned:
                # A timeout spent queueing behind other questions says nothing about the backend.
                error = "timeout"
                if handoff.started:
                    self.breaker.failed()
                else:
                    self.breaker.released()
                raise ModelTimeout(f"no answer within {self.timeout:g} s") from None
            await anyio.to_thread.run_sync(handoff.done.wait)  # answered in time, being stored
        except ModelError:
            error = "error"
            self.breaker.failed()
            raise
        except BaseException:
            error = "other"
            self.breaker.released()
            raise
        finally:
            free_slot()  # a call abandoned at its deadline gives its slot back, as it always has
            self.in_flight -= 1
            if self.on_answer is not None and handoff.started:
                seconds = handoff.model_seconds
                self.on_answer(time.perf_counter() - began if seconds is None else seconds, error)
        self.breaker.succeeded()
        if handoff.error is not None:
            raise handoff.error
        return cast(Result, handoff.result)


def _pair(answer: str, model_name: str) -> tuple[str, str]:
    return answer, model_name


@dataclass
class _Handoff(Generic[Result]):
    """What the model's worker thread tells the event loop; ``lock`` decides abandon vs continue."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)
    started: bool = False
    model_seconds: float | None = None
    abandoned: bool = False
    continued: bool = False
    result: Result | None = None
    error: BaseException | None = None


def model_gate(
    model: Callable[[], VisionChatModel],
    settings: Settings,
    *,
    on_answer: Callable[[float, str | None], None] | None = None,
) -> ModelGate:
    """The gate configured by ``GAP_MODEL_TIMEOUT``, ``GAP_MODEL_CONCURRENCY`` and the breaker settings."""
    return ModelGate(
        model,
        timeout=settings.model_timeout,
        max_concurrency=settings.model_concurrency,
        breaker=CircuitBreaker(
            failures_to_open=settings.model_breaker_failures, reset_s=settings.model_breaker_reset
        ),
        on_answer=on_answer,
    )
