"""The transformers backend under concurrent questions: batched ``generate`` vs one answer at a time.

    python benchmarks/bench_batching.py                            # CPU, the 17 M Qwen2-VL (minutes)
    python benchmarks/bench_batching.py --answers 16               # quicker
    python benchmarks/bench_batching.py --device cuda --size mid   # the GPU check (~1.5 B, random)

Both runs use the game's own :class:`gap.models.transformers_backend.TransformersModel` on the same
random-weight Qwen2-VL folder (``gap.train._tiny.make_tiny_family("qwen2_vl")``: ``--size small``
is its "bench" size, hidden 512, 4 layers, 17.0 M parameters; ``mid`` its "gpu" size, about
1.5 B), with ``--concurrency`` threads asking at once, as the game's model gate does:

- **baseline, one at a time**: ``max_batch=1``, one ``generate`` call per answer, callers queueing
  for the model (what the backend did before batching: one answer at a time under a lock);
- **batching**: ``max_batch=--concurrency`` and a ``--window-ms`` gathering window.

Every answer writes exactly ``--max-new-tokens`` tokens (the folder's generation config sets its
minimum to that), so both runs do the same work. It prints answers/s of each, the ratio (target
>= 3x at 8 concurrent requests on the CPU), the batch sizes seen and how many answers are identical
(greedy decoding: all of them should be).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SIZES = {"small": "bench", "mid": "gpu"}
QUESTIONS = (
    "How many dogs are there?",
    "What colour is the car on the left side of the street, next to the tall green tree?",
    "Is there a cat?",
    "What does the sign above the door of the small shop say, and is it open?",
)


def _model_folder(root: Path, size: str, max_new_tokens: int) -> tuple[Path, int]:
    """The random Qwen2-VL folder, made to write exactly ``max_new_tokens`` tokens; and its parameters."""
    from safetensors import safe_open

    from gap.train._tiny import make_tiny_family

    folder = make_tiny_family("qwen2_vl", root / "model", size=SIZES[size])  # type: ignore[arg-type]
    config_path = folder / "generation_config.json"
    config = json.loads(config_path.read_text())
    config["min_new_tokens"] = max_new_tokens
    config_path.write_text(json.dumps(config))
    parameters = 0
    for weights in folder.glob("*.safetensors"):
        with safe_open(weights, "pt") as tensors:
            parameters += sum(math.prod(tensors.get_slice(name).get_shape()) for name in tensors.keys())  # noqa: SIM118
    return folder, parameters


def _requests(count: int) -> list[tuple[Any, list[Any]]]:
    from PIL import Image

    from gap.models.base import ChatMessage, ImageInput

    requests = []
    for index in range(count):
        buffer = io.BytesIO()
        Image.new("RGB", (40 + index % 23, 56), (index * 37 % 256, 90, 255 - index % 256)).save(buffer, "PNG")
        question = QUESTIONS[index % len(QUESTIONS)]
        requests.append((ImageInput(buffer.getvalue(), "image/png"), [ChatMessage("user", question)]))
    return requests


def _run(
    folder: Path, requests: list[tuple[Any, list[Any]]], *, concurrency: int, max_batch: int, args: Any
) -> dict[str, Any]:
    from gap.models.transformers_backend import TransformersModel

    model = TransformersModel(
        str(folder),
        timeout=3600.0,
        max_new_tokens=args.max_new_tokens,
        device=args.device,
        batch_window=args.window_ms / 1000,
        max_batch=max_batch,
    )
    model.load()
    for image, messages in requests[:2]:  # warm-up: first-call allocations, kernels, caches
        model.answer(image, messages)
    model.batcher.batch_sizes.clear()
    latencies: list[float] = []

    def one(request: tuple[Any, list[Any]]) -> str:
        began = time.perf_counter()
        answer = model.answer(*request)
        latencies.append(time.perf_counter() - began)
        return answer

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        answers = list(pool.map(one, requests))
    seconds = time.perf_counter() - started
    sizes = list(model.batcher.batch_sizes)
    model.batcher.close()
    return {
        "answers": answers,
        "seconds": seconds,
        "rate": len(requests) / seconds,
        "p50": statistics.median(latencies),
        "mean_batch": sum(sizes) / len(sizes),
        "largest_batch": max(sizes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--answers", type=int, default=32, help="answers per run (default 32)")
    parser.add_argument("--concurrency", type=int, default=8, help="questions asked at once (default 8)")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="tokens per answer (default 16)")
    parser.add_argument("--window-ms", type=float, default=5.0, help="the gathering window (default 5)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument(
        "--size", choices=sorted(SIZES), default="small", help="small (~20 M) or mid (~1.5 B)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()

    import torch
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here")
    with tempfile.TemporaryDirectory() as tmp:
        folder, parameters = _model_folder(Path(tmp), args.size, args.max_new_tokens)
        requests = _requests(args.answers)
        single = _run(folder, requests, concurrency=args.concurrency, max_batch=1, args=args)
        batched = _run(folder, requests, concurrency=args.concurrency, max_batch=args.concurrency, args=args)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(
        f"Qwen2-VL random ({args.size}, {parameters / 1e6:.1f} M parameters) on {args.device} ({device}); "
        f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} "
        f"CPU threads; {args.answers} answers of {args.max_new_tokens} tokens, {args.concurrency} concurrent"
    )
    print("| run | answers/s | seconds | p50 latency s | mean batch | largest batch |")
    print("|---|---|---|---|---|---|")
    for label, run in (("baseline: one at a time (max_batch=1)", single), ("batching", batched)):
        print(
            f"| {label} | {run['rate']:.2f} | {run['seconds']:.1f} | {run['p50']:.2f} | "
            f"{run['mean_batch']:.1f} | {run['largest_batch']} |"
        )
    same = sum(a == b for a, b in zip(single["answers"], batched["answers"], strict=True))
    ratio = batched["rate"] / single["rate"]
    print(f"batching vs one at a time: {ratio:.2f}x (target >= 3x at 8 concurrent requests)")
    print(f"identical answers (greedy): {same} / {args.answers}")


if __name__ == "__main__":
    main()
