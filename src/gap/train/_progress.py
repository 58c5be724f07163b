"""A Rich progress bar for ``transformers.Trainer``: step, loss, learning rate and samples/s."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from transformers import TrainerCallback


class RichProgress(TrainerCallback):
    """Shown on the main process only; on other ranks (or ``enabled=False``) it does nothing."""

    def __init__(self, *, enabled: bool, samples_per_step: int) -> None:
        self.enabled = enabled
        self.samples_per_step = samples_per_step
        self._progress: Progress | None = None
        self._task: Any = None
        self._started = 0.0
        self._first_step = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not (self.enabled and state.is_world_process_zero):
            return
        self._progress = Progress(
            TextColumn("[bold]training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=state.max_steps, stats="")
        self._started = time.monotonic()
        self._first_step = state.global_step
        self._progress.update(self._task, completed=state.global_step)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if self._progress is None or not logs or "loss" not in logs:
            return
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = (state.global_step - self._first_step) * self.samples_per_step * args.world_size / elapsed
        stats = f"loss {logs['loss']:.4f}  lr {logs.get('learning_rate', 0.0):.2e}  {rate:.2f} samples/s"
        self._progress.update(self._task, completed=state.global_step, stats=stats)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
