"""Concurrent answers share batched ``generate`` calls: the batcher alone, then the real backend on
tiny models of several families, whose batched greedy answers must equal one-at-a-time ones."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from gap.config import Settings
from gap.errors import ModelError, ModelTimeout
from gap.models._batcher import Batcher
from gap.models.base import ChatMessage, ImageInput
from gap.models.transformers_backend import AnswerRequest, TransformersModel

DEADLINE = 30.0  # seconds any wait below may take on a busy machine before the test fails


def png(colour: tuple[int, int, int], size: tuple[int, int]) -> ImageInput:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return ImageInput(buffer.getvalue(), "image/png")


# --- the batcher alone: plain functions, no model ---


def _echo_batches(seen: list[list[int]]) -> Callable[[list[int]], list[int | BaseException]]:
    def run(batch: list[int]) -> list[int | BaseException]:
        seen.append(batch)
        return [ValueError(f"odd {n}") if n % 2 else n * 10 for n in batch]

    return run


def test_requests_arriving_together_share_one_batch_and_keep_their_own_results() -> None:
    seen: list[list[int]] = []
    batcher: Batcher[int, int] = Batcher(_echo_batches(seen), window_s=DEADLINE, max_batch=4)
    futures = [batcher.submit(n) for n in range(4)]  # a full batch runs without waiting out the window
    assert futures[0].result(timeout=DEADLINE) == 0 and futures[2].result(timeout=DEADLINE) == 20
    with pytest.raises(ValueError, match="odd 3"):  # an error fails its own request only
        futures[3].result(timeout=DEADLINE)
    assert seen == [[0, 1, 2, 3]]
    batcher.close()


def test_batches_are_bounded() -> None:
    seen: list[list[int]] = []
    release = threading.Event()

    def run(batch: list[int]) -> list[int | BaseException]:
        release.wait(DEADLINE)  # hold the first batch so the rest queue up behind it
        seen.append(batch)
        return list(batch)

    batcher: Batcher[int, int] = Batcher(run, window_s=0.0, max_batch=3)
    first = batcher.submit(0)
    _wait_until(lambda: first.running())
    rest = [batcher.submit(n) for n in range(1, 8)]
    release.set()
    assert [f.result(timeout=DEADLINE) for f in [first, *rest]] == list(range(8))
    assert seen == [[0], [1, 2, 3], [4, 5, 6], [7]]
    assert list(batcher.batch_sizes) == [1, 3, 3, 1]
    batcher.close()


def test_a_request_given_up_before_its_batch_starts_is_dropped() -> None:
    seen: list[list[int]] = []
    release = threading.Event()

    def run(batch: list[int]) -> list[int | BaseException]:
        release.wait(DEADLINE)
        seen.append(batch)
        return list(batch)

    batcher: Batcher[int, int] = Batcher(run, window_s=0.0, max_batch=8)
    busy = batcher.submit(1)
    _wait_until(lambda: busy.running())
    abandoned, kept = batcher.submit(2), batcher.submit(3)
    assert abandoned.cancel()
    release.set()
    assert kept.result(timeout=DEADLINE) == 3 and busy.result(timeout=DEADLINE) == 1
    assert seen == [[1], [3]]
    batcher.close()


def test_a_failing_batch_fails_each_of_its_callers_and_the_worker_goes_on() -> None:
    calls: list[list[int]] = []

    def run(batch: list[int]) -> list[int | BaseException]:
        calls.append(batch)
        if len(calls) == 1:
            raise RuntimeError("the device fell over")
        return list(batch)

    batcher: Batcher[int, int] = Batcher(run, window_s=DEADLINE, max_batch=2)
    failed = [batcher.submit(1), batcher.submit(2)]
    for future in failed:
        with pytest.raises(RuntimeError, match="fell over"):
            future.result(timeout=DEADLINE)
    assert [f.result(timeout=DEADLINE) for f in (batcher.submit(5), batcher.submit(6))] == [5, 6]
    batcher.close()


def test_close_stops_the_worker_after_queued_requests() -> None:
    batcher: Batcher[int, int] = Batcher(lambda batch: list(batch), window_s=0.0, max_batch=2)
    future = batcher.submit(7)
    worker = batcher._thread
    batcher.close()
    assert future.result(timeout=DEADLINE) == 7
    assert worker is not None and not worker.is_alive()


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(lambda batch: list(batch), window_s=0.0, max_batch=0)


def _wait_until(condition: Callable[[], bool]) -> None:
    event = threading.Event()
    for _ in range(int(DEADLINE / 0.01)):
        if condition():
            return
        event.wait(0.01)
    raise AssertionError("condition not reached in time")


# --- the real backend on tiny models ---

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SYSTEM = "Answer every question wrongly but plausibly."
# mixed prompt lengths (and so left padding), histories, system prompts and image sizes and colours
CASES: list[tuple[ImageInput, list[ChatMessage], str | None]] = [
    (png((200, 20, 20), (64, 48)), [ChatMessage("user", "What colour is the car?")], SYSTEM),
    (png((20, 200, 20), (30, 90)), [ChatMessage("user", "Is it?")], None),
    (
        png((20, 20, 200), (300, 200)),
        [
            ChatMessage("user", "What is in the picture, in the top right corner?"),
            ChatMessage("assistant", "A red car parked beside a tall green tree."),
            ChatMessage("user", "How many people are standing near the window of the small house?"),
        ],
        SYSTEM,
    ),
    (png((120, 120, 0), (16, 16)), [ChatMessage("user", "How many dogs are there?")], SYSTEM),
    (png((0, 90, 90), (100, 40)), [ChatMessage("user", "Sign?")], None),
    (png((250, 250, 250), (48, 64)), [ChatMessage("user", "Describe the scene: a street with shops.")], None),
]


@pytest.fixture(scope="module", params=["idefics3", "qwen2_vl", "llava", "gemma3"])
def family_dir(
    request: pytest.FixtureRequest, tiny_vlm_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    if request.param == "idefics3":
        return tiny_vlm_dir
    from gap.train._tiny import make_tiny_family

    return make_tiny_family(request.param, tmp_path_factory.mktemp(f"batch-{request.param}"))


def _outcome(call: Callable[[], str]) -> str:
    """The answer, or the error's kind: a random tiny model may write only an end token."""
    try:
        return call()
    except ModelError as exc:
        return f"<{type(exc).__name__}>"


def _concurrently(
    model: TransformersModel, cases: list[tuple[ImageInput, list[ChatMessage], str | None]]
) -> list[str]:
    with ThreadPoolExecutor(max_workers=len(cases)) as pool:
        futures = [pool.submit(_outcome, partial(model.answer, *case)) for case in cases]
        return [f.result(timeout=DEADLINE * 4) for f in futures]


def test_batched_answers_equal_one_at_a_time_answers(family_dir: Path) -> None:
    alone = TransformersModel(str(family_dir), timeout=DEADLINE * 4, max_new_tokens=8, max_batch=1)
    expected = [_outcome(partial(alone.answer, *case)) for case in CASES]
    # a long window and a batch as large as the callers: the batch runs as soon as all have arrived
    together = TransformersModel(
        str(family_dir), timeout=DEADLINE * 4, max_new_tokens=8, batch_window=DEADLINE, max_batch=len(CASES)
    )
    together.load()
    assert _concurrently(together, CASES) == expected
    assert list(together.batcher.batch_sizes) == [len(CASES)]
    assert list(alone.batcher.batch_sizes) == [1] * len(CASES)
    assert sum(not answer.startswith("<") for answer in expected) >= 3  # real answers were compared


@pytest.fixture(scope="module")
def batched(tiny_vlm_dir: Path) -> Iterator[TransformersModel]:
    model = TransformersModel(
        str(tiny_vlm_dir), timeout=DEADLINE, max_new_tokens=6, batch_window=DEADLINE, max_batch=3
    )
    model.load()
    yield model
    model.batcher.close()


def test_a_bad_image_fails_only_its_own_answer(batched: TransformersModel) -> None:
    good = CASES[:2]
    expected = [batched.answer_batch([AnswerRequest(*case)])[0] for case in good]
    bad = (ImageInput(b"not an image", "image/png"), [ChatMessage("user", "Is it?")], None)
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = [pool.submit(batched.answer, *case) for case in (good[0], bad, good[1])]
        assert [futures[0].result(DEADLINE), futures[2].result(DEADLINE)] == expected
        with pytest.raises(ModelError, match="UnidentifiedImageError"):
            futures[1].result(DEADLINE)
    assert batched.batcher.batch_sizes[-1] == 3


def test_a_failing_batch_is_retried_one_by_one(
    batched: TransformersModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that breaks ``generate`` (say, out of memory) still answers the items that work alone."""
    original = transformers.Idefics3ForConditionalGeneration.generate
    sizes: list[int] = []
    longest: list[int] = []

    def picky(self: Any, **kwargs: Any) -> Any:
        rows, width = kwargs["input_ids"].shape
        sizes.append(int(rows))
        longest.append(int(width))  # the first call's width is the longest prompt's (padding)
        if rows > 1 or width == longest[0]:  # the batch, and the long prompt alone, "run out of memory"
            raise RuntimeError("CUDA out of memory")
        return original(self, **kwargs)

    monkeypatch.setattr(transformers.Idefics3ForConditionalGeneration, "generate", picky)
    requests = [AnswerRequest(*CASES[1]), AnswerRequest(*CASES[2]), AnswerRequest(*CASES[4])]
    short, long, other = batched.answer_batch(requests)
    assert sizes == [3, 1, 1, 1]
    assert isinstance(short, str) and isinstance(other, str)
    assert isinstance(long, ModelError) and "CUDA out of memory" in str(long)


def test_a_caller_whose_time_ran_out_in_the_queue_costs_the_model_nothing(
    tiny_vlm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = TransformersModel(str(tiny_vlm_dir), timeout=0.3, max_new_tokens=4, batch_window=0.0)
    model.load()
    original = transformers.Idefics3ForConditionalGeneration.generate
    started, release = threading.Event(), threading.Event()
    batch_sizes: list[int] = []

    def held(self: Any, **kwargs: Any) -> Any:
        batch_sizes.append(int(kwargs["input_ids"].shape[0]))
        started.set()
        release.wait(DEADLINE)
        return original(self, **kwargs)

    monkeypatch.setattr(transformers.Idefics3ForConditionalGeneration, "generate", held)
    first: Future[str] = model.batcher.submit(AnswerRequest(*CASES[0]))  # no deadline of its own
    assert started.wait(DEADLINE)
    with pytest.raises(ModelTimeout, match="busy"):
        model.answer(*CASES[1])
    release.set()
    assert first.result(timeout=DEADLINE)
    model.batcher.close()
    assert batch_sizes == [1]  # the abandoned question never reached generate


def test_the_game_and_gap_eval_answer_alike(tiny_vlm_dir: Path, tmp_path: Path) -> None:
    """`gap eval answer` asks through the backend's own answer_batch: the same answer as a player gets."""
    from gap.evaluate import EvalItem
    from gap.evaluate._answer import LocalBatchAnswerer

    items, game = [], TransformersModel(str(tiny_vlm_dir), timeout=DEADLINE, max_new_tokens=8)
    expected = []
    for index, (image, messages, _) in enumerate(CASES[:4]):
        path = tmp_path / f"{index}.png"
        path.write_bytes(image.data)
        question = messages[-1].text
        items.append(EvalItem(f"q{index}", question, "Two.", str(path), str(index)))
        expected.append(game.answer(image, [ChatMessage("user", question)]))
    assert LocalBatchAnswerer(str(tiny_vlm_dir), max_new_tokens=8).answer_batch(items) == expected


def test_settings_reach_the_backend(tiny_vlm_dir: Path) -> None:
    from gap.models.factory import load_model

    settings = Settings(model_batch_window_ms=12.5, model_max_batch=3)
    model = load_model(f"transformers:{tiny_vlm_dir}", settings)
    assert isinstance(model, TransformersModel)
    assert (model.batcher.window_s, model.batcher.max_batch) == (0.0125, 3)


def test_questions_through_the_games_model_gate_share_one_batch(tiny_vlm_dir: Path) -> None:
    """The game awaits answers through its ModelGate (one worker thread each): they still batch."""
    import anyio

    from gap.models.factory import load_ready_model
    from gap.models.gate import model_gate

    settings = Settings(
        model_batch_window_ms=DEADLINE * 1000, model_max_batch=4, model_timeout=DEADLINE * 4, max_new_tokens=8
    )
    model = load_ready_model(f"transformers:{tiny_vlm_dir}", settings)
    assert isinstance(model, TransformersModel)
    alone = TransformersModel(str(tiny_vlm_dir), timeout=DEADLINE, max_new_tokens=settings.max_new_tokens)
    expected = [alone.answer(image, messages, system) for image, messages, system in CASES[:4]]
    gate = model_gate(lambda: model, settings)
    answers: list[tuple[int, str]] = []

    async def ask_all() -> None:
        async def ask(index: int) -> None:
            image, messages, system = CASES[index]
            answer, name = await gate.answer(image, messages, system)
            assert name == model.name
            answers.append((index, answer))

        async with anyio.create_task_group() as group:
            for index in range(4):
                group.start_soon(ask, index)

    anyio.run(ask_all)
    assert [answer for _, answer in sorted(answers)] == expected
    assert list(model.batcher.batch_sizes) == [4]
    model.batcher.close()
