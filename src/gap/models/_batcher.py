"""Gather concurrent requests into batches for one worker thread (the local model's only user).

A local model answers 8 questions in one ``generate`` call in little more time than one, so callers
do not take turns under a lock: each :meth:`Batcher.submit` queues its request and returns a
future; one worker thread takes what is queued (waiting up to ``window_s`` after the oldest request
arrived for company, at most ``max_batch``), runs the batch and settles each future with its own
result or error. A caller that gave up cancels its future; a cancelled request that has not
started is dropped from its batch. Pure threading: nothing here knows about models.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Request = TypeVar("Request")
Result = TypeVar("Result")


@dataclass
class _Pending(Generic[Request, Result]):
    request: Request
    future: Future[Result] = field(default_factory=Future)
    queued_at: float = field(default_factory=time.monotonic)


class Batcher(Generic[Request, Result]):
    """One worker thread running ``run`` on batches of submitted requests.

    ``run`` returns one result per request, in order; a result that is an exception fails only its
    own future. An exception raised by ``run`` itself fails every future of that batch.
    """

    def __init__(
        self,
        run: Callable[[list[Request]], Sequence[Result | BaseException]],
        *,
        window_s: float,
        max_batch: int,
        name: str = "gap-batcher",
    ) -> None:
        if max_batch < 1 or window_s < 0:
            raise ValueError(f"need max_batch >= 1 and window_s >= 0, got {max_batch} and {window_s}")
        self.run = run
        self.window_s = window_s
        self.max_batch = max_batch
        self.name = name
        self.batch_sizes: deque[int] = deque(maxlen=1024)
        """Sizes of the latest batches run (started requests only), for tests and benchmarks."""
        self._queue: queue.SimpleQueue[_Pending[Request, Result] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, request: Request) -> Future[Result]:
        """Queue ``request``; its future settles when its batch has run (cancel it to give up)."""
        pending: _Pending[Request, Result] = _Pending(request)
        self._ensure_worker()
        self._queue.put(pending)
        return pending.future

    def close(self) -> None:
        """Stop the worker once the requests queued before this call have run."""
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()

    def _ensure_worker(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()

    def _work(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            batch, stopping = self._gather(first)
            live = [p for p in batch if p.future.set_running_or_notify_cancel()]
            if live:
                self._run(live)

    def _gather(self, first: _Pending[Request, Result]) -> tuple[list[_Pending[Request, Result]], bool]:
        """``first`` and what else arrives within the window opened by ``first``'s arrival."""
        batch = [first]
        closes = first.queued_at + self.window_s
        while len(batch) < self.max_batch:
            try:
                left = closes - time.monotonic()
                pending = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if pending is None:
                return batch, True
            batch.append(pending)
        return batch, False

    def _run(self, live: list[_Pending[Request, Result]]) -> None:
        self.batch_sizes.append(len(live))
        try:
            results = self.run([p.request for p in live])
            if len(results) != len(live):
                raise RuntimeError(f"{self.name}: {len(results)} results for {len(live)} requests")
        except BaseException as exc:  # the whole batch failed: every caller hears why
            for pending in live:
                pending.future.set_exception(exc)
            return
        for pending, result in zip(live, results, strict=True):
            if isinstance(result, BaseException):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)
