"""The model gate's ``answer_then``: what follows an answer runs in the model's own worker thread."""

from __future__ import annotations

import threading
import time

import anyio
import pytest

from gap.errors import ModelTimeout
from gap.models.base import ChatMessage, ImageInput
from gap.models.gate import CircuitBreaker, CircuitState, ModelGate

IMAGE = ImageInput(b"", "image/png")
TIMEOUT_S = 0.3


class ThreadModel:
    """Answers with the name of the thread it runs in."""

    name = "thread"

    def answer(self, image: ImageInput, messages: list[ChatMessage], system: str | None = None) -> str:
        return threading.current_thread().name


def gate() -> ModelGate:
    return ModelGate(
        ThreadModel,
        timeout=TIMEOUT_S,
        max_concurrency=2,
        breaker=CircuitBreaker(failures_to_open=1, reset_s=60),
    )


def test_then_runs_in_the_models_thread_with_its_answer() -> None:
    def then(answer: str, model_name: str) -> tuple[str, str, str]:
        return answer, model_name, threading.current_thread().name

    answer, model_name, then_thread = anyio.run(lambda: gate().answer_then(IMAGE, [], None, None, then=then))
    assert model_name == "thread"
    assert then_thread == answer != threading.current_thread().name


def test_what_began_before_the_deadline_is_served_after_it() -> None:
    """An answer being stored when the deadline passes is not reported as a time-out (nor lost)."""
    the_gate = gate()

    def slow_store(answer: str, model_name: str) -> str:
        ends = time.monotonic() + TIMEOUT_S * 2  # the deadline passes while this runs
        while time.monotonic() < ends:
            time.sleep(0.01)
        return "stored"

    assert anyio.run(lambda: the_gate.answer_then(IMAGE, [], None, None, then=slow_store)) == "stored"
    assert the_gate.breaker.state is CircuitState.CLOSED and the_gate.in_flight == 0


def test_an_error_after_the_answer_is_not_the_backends() -> None:
    the_gate = gate()

    def broken_store(answer: str, model_name: str) -> str:
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError, match="database down"):
        anyio.run(lambda: the_gate.answer_then(IMAGE, [], None, None, then=broken_store))
    assert the_gate.breaker.state is CircuitState.CLOSED and the_gate.breaker.failures == 0


def test_a_model_past_the_deadline_is_a_time_out() -> None:
    the_gate = gate()
    release = threading.Event()
    ran: list[str] = []

    class HungModel(ThreadModel):
        def answer(self, image: ImageInput, messages: list[ChatMessage], system: str | None = None) -> str:
            release.wait(30)
            return "late"

    async def ask() -> None:
        await the_gate.answer_then(IMAGE, [], None, HungModel, then=lambda a, _n: ran.append(a))

    try:
        with pytest.raises(ModelTimeout):
            anyio.run(ask)
    finally:
        release.set()
    assert ran == [] and the_gate.breaker.state is CircuitState.OPEN


def test_a_model_slot_is_free_while_its_answer_is_stored() -> None:
    """One slot: a second question reaches the backend while the first one's answer is being stored."""
    the_gate = ModelGate(
        ThreadModel, timeout=30, max_concurrency=1, breaker=CircuitBreaker(failures_to_open=1, reset_s=60)
    )
    storing, release_store = threading.Event(), threading.Event()
    second_answered = threading.Event()

    def held_store(answer: str, model_name: str) -> str:
        storing.set()
        release_store.wait(30)
        return "first"

    def second_store(answer: str, model_name: str) -> str:
        second_answered.set()
        return "second"

    async def both() -> tuple[str, bool, str]:
        results: dict[str, str] = {}

        async def first() -> None:
            results["first"] = await the_gate.answer_then(IMAGE, [], None, None, then=held_store)

        async with anyio.create_task_group() as group:
            group.start_soon(first)
            assert await anyio.to_thread.run_sync(storing.wait, 10)
            second = await the_gate.answer_then(IMAGE, [], None, None, then=second_store)
            answered_while_storing = not release_store.is_set()
            release_store.set()
        return second, answered_while_storing, results["first"]

    try:
        second, answered_while_storing, first = anyio.run(both)
    finally:
        release_store.set()
    assert (second, first) == ("second", "first") and answered_while_storing
    assert second_answered.is_set() and the_gate.in_flight == 0


def test_the_slots_bound_the_calls_to_the_backend() -> None:
    lock, inside, peak = threading.Lock(), [0], [0]

    class CountingModel(ThreadModel):
        def answer(self, image: ImageInput, messages: list[ChatMessage], system: str | None = None) -> str:
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            time.sleep(0.02)  # long enough for the other questions to queue behind the slots
            with lock:
                inside[0] -= 1
            return "ok"

    the_gate = ModelGate(
        CountingModel, timeout=30, max_concurrency=2, breaker=CircuitBreaker(failures_to_open=1, reset_s=60)
    )
    answers: list[str] = []

    async def many() -> None:
        async def one() -> None:
            answers.append((await the_gate.answer(IMAGE, [], None))[0])

        async with anyio.create_task_group() as group:
            for _ in range(8):
                group.start_soon(one)

    anyio.run(many)
    assert answers == ["ok"] * 8 and peak[0] <= 2
