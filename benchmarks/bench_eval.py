"""gap eval throughput: batched vs one-at-a-time local answering, and the judge's real concurrency.

    python benchmarks/bench_eval.py                  # 200 items at batch 16 on the tiny model (~1 min)
    python benchmarks/bench_eval.py --items 64 --judge-items 80   # quicker

1. **Answering**: the same 200 items (small images, questions of different lengths) answered by the
   tiny local model one item per ``generate`` call, then ``--batch-size`` items per call (left padding),
   both through :class:`gap.evaluate._answer.LocalBatchAnswerer` after one warm-up call. It checks the
   answers are identical (greedy) and prints the speed-up (target >= 3x on the CPU at batch 16).
2. **Judge**: ``--judge-items`` items scored by :func:`gap.evaluate.judge_items` against a scripted
   OpenAI-compatible server on 127.0.0.1 that answers every request after 50 ms. With ``--concurrency``
   C, the ideal is C x 20 items/s; it prints the measured rate and its ratio to that ideal (target
   >= 0.8). The cache is a fresh file, so every item is a real request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

QUESTIONS = (
    "How many dogs are there?",
    "What colour is the car on the left side of the street?",
    "Is there a cat?",
    "What is written on the sign above the door of the small shop?",
)


def _items(folder: Path, count: int) -> list[Any]:
    from PIL import Image

    from gap.evaluate import EvalItem

    items = []
    for index in range(count):
        image = folder / f"{index}.png"
        Image.new("RGB", (16 + index % 17, 32), (index % 256, 90, 255 - index % 256)).save(image)
        question = QUESTIONS[index % len(QUESTIONS)]
        items.append(EvalItem(f"q{index}", question, "Two.", str(image), str(index)))
    return items


def bench_answering(count: int, batch_size: int, max_new_tokens: int) -> dict[str, float]:
    from gap.evaluate._answer import LocalBatchAnswerer
    from gap.models.tiny import make_tiny_vlm

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = make_tiny_vlm(folder / "model")
        items = _items(folder, count)
        answerer = LocalBatchAnswerer(str(model), max_new_tokens=max_new_tokens)
        answerer.answer_batch(items[:2])  # load and warm up
        started = time.perf_counter()
        single = [answerer.answer_batch([item])[0] for item in items]
        single_s = time.perf_counter() - started
        started = time.perf_counter()
        batched: list[Any] = []
        for start in range(0, count, batch_size):
            batched += answerer.answer_batch(items[start : start + batch_size])
        batched_s = time.perf_counter() - started
    same = sum(a == b for a, b in zip(single, batched, strict=True))
    return {"one_at_a_time_s": single_s, "batched_s": batched_s, "identical": same, "items": count}


def _serve_scripted(port: int, delay: float) -> None:
    """The scripted judge: every request answered "0.5" after ``delay`` seconds (its own process)."""
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat() -> dict[str, Any]:
        await asyncio.sleep(delay)
        return {"model": "scripted", "choices": [{"message": {"role": "assistant", "content": "0.5"}}]}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def bench_judge(count: int, concurrency: int, delay: float) -> dict[str, float]:
    """Judge throughput; the server runs in another process so it does not share the client's GIL."""
    import multiprocessing
    import socket

    import httpx

    from gap.evaluate import EvalItem, JudgeCache, OpenAIJudge, judge_items, judge_prompt

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = multiprocessing.get_context("spawn").Process(
        target=_serve_scripted, args=(port, delay), daemon=True
    )
    server.start()
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.post(f"{url}/chat/completions", json={}, timeout=2.0)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline or not server.is_alive():
                raise RuntimeError("the scripted judge did not start") from None
            time.sleep(0.1)
    items = [EvalItem(f"q{i}", "How many?", "Two.", "x.jpg", f"img{i}", f"answer {i}") for i in range(count)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            judge = OpenAIJudge("scripted", base_url=url, retries=0)
            cache = JudgeCache(Path(tmp) / "cache.sqlite3")
            started = time.perf_counter()
            results, run = judge_items(items, judge, cache, judge_prompt(), concurrency=concurrency)
            elapsed = time.perf_counter() - started
            judge.close()
            cache.close()
    finally:
        server.terminate()
        server.join(timeout=10)
    parsed = sum(r.score is not None for r in results)
    return {"elapsed_s": elapsed, "items": count, "calls": run.calls, "parsed": parsed}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--judge-items", type=int, default=320)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--delay", type=float, default=0.05)
    args = parser.parse_args(argv)
    print(f"python {sys.version.split()[0]}, {platform.platform()}, {os.cpu_count()} CPUs")
    answering = bench_answering(args.items, args.batch_size, args.max_new_tokens)
    ratio = answering["one_at_a_time_s"] / answering["batched_s"]
    print(
        f"answering {answering['items']} items: one at a time {answering['one_at_a_time_s']:.1f} s, "
        f"batch {args.batch_size} {answering['batched_s']:.1f} s -> {ratio:.1f}x "
        f"(target >= 3x); identical answers {answering['identical']}/{answering['items']}"
    )
    judge = bench_judge(args.judge_items, args.concurrency, args.delay)
    rate = judge["items"] / judge["elapsed_s"]
    ideal = args.concurrency / args.delay
    print(
        f"judge {judge['items']} items ({judge['calls']} calls, {judge['parsed']} parsed) against a "
        f"{args.delay * 1000:.0f} ms server at concurrency {args.concurrency}: {rate:.0f} items/s, "
        f"{rate / ideal:.2f}x of the ideal {ideal:.0f} items/s (target >= 0.8x)"
    )


if __name__ == "__main__":
    main()
