"""Does an instructed answer take longer than a plain one? Answer latency of both kinds on one model.

    python benchmarks/bench_taint_latency.py                  # the tiny model, in process (~1 min)
    python benchmarks/bench_taint_latency.py --serve          # also through `transformers serve`
    python benchmarks/bench_taint_latency.py --model openai:NAME --pairs 200   # a served model
                                                              # (GAP_OPENAI_BASE_URL, as the game uses)

Each trial draws one turn (an image, a history depth from 0 to 2, a question), builds it plain and
instructed with :func:`gap.game.turn_prompt`, exactly as the game does, and times
``model.answer`` for both in random order, so drift (thermal, caches, other load) hits both kinds alike.
It prints the mean latency of each kind, the mean paired difference (instructed - plain) with a
bootstrap and a t 95% confidence interval, and the mean answer length, which drives generation time.
A CI that covers 0 means no timing difference was detected at this sample size.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from gap.config import Settings
from gap.game import turn_prompt
from gap.models.base import ImageInput, VisionChatModel

QUESTIONS = ("What colour is the car?", "How many people are there?", "What is on the left?", "Is it day?")
HISTORY = [("What is in the picture?", "A street with a car."), ("Is the car parked?", "Yes, by the kerb.")]
SERVE_START_TIMEOUT = 180.0
BOOTSTRAP_RESAMPLES = 10_000


@dataclass(frozen=True)
class Result:
    backend: str
    plain_s: np.ndarray
    instructed_s: np.ndarray
    plain_chars: np.ndarray
    instructed_chars: np.ndarray


def png(rng: random.Random) -> ImageInput:
    from PIL import Image

    image = Image.new("RGB", (96, 64), tuple(rng.randrange(256) for _ in range(3)))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return ImageInput(buffer.getvalue(), "image/png")


def measure(model: VisionChatModel, backend: str, *, pairs: int, warmup: int, seed: int) -> Result:
    """``pairs`` paired trials after ``warmup`` untimed ones; the order within each pair is random."""
    rng = random.Random(seed)
    images = [png(rng) for _ in range(8)]
    times: dict[bool, list[float]] = {False: [], True: []}
    chars: dict[bool, list[int]] = {False: [], True: []}
    for trial in range(warmup + pairs):
        image, question = rng.choice(images), rng.choice(QUESTIONS)
        history = HISTORY[: rng.randint(0, len(HISTORY))]
        for instructed in rng.sample([False, True], 2):
            prompt = turn_prompt(history, question, instructed=instructed)
            started = time.perf_counter()
            answer = model.answer(image, prompt.messages, system=prompt.system)
            elapsed = time.perf_counter() - started
            if trial >= warmup:
                times[instructed].append(elapsed)
                chars[instructed].append(len(answer))
    return Result(
        backend,
        np.array(times[False]),
        np.array(times[True]),
        np.array(chars[False]),
        np.array(chars[True]),
    )


def bootstrap_ci(diffs: np.ndarray, seed: int) -> tuple[float, float]:
    """Percentile bootstrap 95% CI of the mean of ``diffs``."""
    rng = np.random.default_rng(seed)
    means = rng.choice(diffs, size=(BOOTSTRAP_RESAMPLES, diffs.size), replace=True).mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def t_ci(diffs: np.ndarray) -> tuple[float, float]:
    """Student t 95% CI of the mean of ``diffs`` (paired t)."""
    half = stats.t.ppf(0.975, diffs.size - 1) * diffs.std(ddof=1) / np.sqrt(diffs.size)
    return float(diffs.mean() - half), float(diffs.mean() + half)


def report(result: Result, seed: int) -> None:
    diffs = result.instructed_s - result.plain_s
    ms = 1000.0
    boot, tint = bootstrap_ci(diffs, seed), t_ci(diffs)
    print(f"\n{result.backend}: {diffs.size} pairs")
    for label, seconds, answer_chars in (
        ("plain", result.plain_s, result.plain_chars),
        ("instructed", result.instructed_s, result.instructed_chars),
    ):
        print(f"  {label:<11} mean {seconds.mean() * ms:8.2f} ms   answer {answer_chars.mean():6.1f} chars")
    print(f"  difference  mean {diffs.mean() * ms:+8.2f} ms (instructed - plain)")
    print(f"    bootstrap 95% CI [{boot[0] * ms:+.2f}, {boot[1] * ms:+.2f}] ms")
    print(f"    paired t  95% CI [{tint[0] * ms:+.2f}, {tint[1] * ms:+.2f}] ms")
    covered = boot[0] <= 0 <= boot[1]
    print(f"  {'no difference detected' if covered else 'DIFFERENCE: the CI excludes 0'}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def transformers_serve(model_dir: Path) -> Iterator[str]:
    """``transformers serve`` on ``model_dir`` at a free loopback port; yields its base URL."""
    import httpx

    port = free_port()
    code = "import sys; from transformers.cli.transformers import main; sys.argv[0] = 'transformers'; main()"
    command = [
        sys.executable,
        "-c",
        code,
        "serve",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"}
        )
        base_url = f"http://127.0.0.1:{port}/v1"
        try:
            deadline = time.monotonic() + SERVE_START_TIMEOUT
            while True:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    tail = log.read().decode(errors="replace")[-3000:]
                    raise SystemExit(f"transformers serve did not start:\n{tail}")
                try:
                    if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            yield base_url
        finally:
            process.terminate()
            process.wait(timeout=20)


def ready(model: VisionChatModel) -> VisionChatModel:
    """Load weights or probe the server now, as `gap serve` does, so no timed answer pays for it."""
    preload = getattr(model, "load", None)
    if callable(preload):
        preload()
    return model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=100, help="timed pairs per backend (default 100)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed pairs first (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=12)
    parser.add_argument(
        "--serve", action="store_true", help="also through `transformers serve` on the tiny model"
    )
    parser.add_argument("--model", help="a model spec (as GAP_MODEL) instead of the tiny in-process model")
    args = parser.parse_args()

    from gap.models.factory import load_model

    settings = Settings(max_new_tokens=args.max_new_tokens, model_timeout=120)
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}")
    results: list[Result] = []
    if args.model:
        model = ready(load_model(args.model, settings))
        results.append(measure(model, args.model, pairs=args.pairs, warmup=args.warmup, seed=args.seed))
    else:
        from gap.models.tiny import make_tiny_vlm

        with tempfile.TemporaryDirectory() as folder:
            tiny_dir = make_tiny_vlm(Path(folder))
            local = ready(load_model(f"transformers:{tiny_dir}", settings))
            results.append(
                measure(local, "tiny model, in process", pairs=args.pairs, warmup=args.warmup, seed=args.seed)
            )
            if args.serve:
                with transformers_serve(tiny_dir) as base_url:
                    served_settings = settings.model_copy(update={"openai_base_url": base_url})
                    served = ready(load_model(f"openai:{tiny_dir}", served_settings))
                    results.append(
                        measure(
                            served,
                            "tiny model, transformers serve",
                            pairs=args.pairs,
                            warmup=args.warmup,
                            seed=args.seed,
                        )
                    )
    for result in results:
        report(result, args.seed)


if __name__ == "__main__":
    main()
