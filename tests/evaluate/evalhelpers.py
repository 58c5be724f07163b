"""A scripted OpenAI-compatible judge (a real FastAPI app on uvicorn) and item builders for eval tests.

The judge's reply is chosen by a directive (``@...``) inside the model answer of the prompt:
``@num:X`` -> "X"; ``@prose:X`` -> "The score is X, since ..."; ``@garbage`` -> no number;
``@ambiguous`` -> two numbers;
``@flaky`` -> HTTP 500 on the first request of that prompt, then "1"; ``@slow`` -> the first request of
that prompt waits past the client's timeout, then "0.5"; ``@down`` -> HTTP 503 always.
Any other answer gets a reply from its length: "0.5", "Score: 1" or "no idea" (len % 3).
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from gap.evaluate import EvalItem

REPORTED_MODEL = "scripted-judge-2026-01-01"
_ANSWER = re.compile(r'\*\*Model Answer\*\*: "(.*)"\n')
_DIRECTIVE = re.compile(r"@(num|prose):([0-9.]+)|@(garbage|ambiguous|flaky|slow|down)\b")


@dataclass
class ScriptedJudge:
    app: FastAPI
    calls: list[str] = field(default_factory=list)
    seen: Counter[str] = field(default_factory=Counter)
    slow_seconds: float = 0.0
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0
    max_in_flight: int = 0


def directive(answer: str) -> str | None:
    match = _DIRECTIVE.search(answer)
    return None if match is None else match.group(1) or match.group(3)


def reply_for(answer: str) -> str:
    """What the scripted judge replies to a first-time-successful request about ``answer``."""
    match = _DIRECTIVE.search(answer)
    if match is None:
        return ("0.5", "Score: 1", "no idea")[len(answer) % 3]
    if match.group(1) == "num":
        return match.group(2)
    if match.group(1) == "prose":
        return f"The score is {match.group(2)}, since the answer meets some criteria."
    replies = {
        "garbage": "The answer is partially right.",
        "ambiguous": "Somewhere between 0.2 and 0.9.",
        "flaky": "1",
        "slow": "0.5",
    }
    return replies[match.group(3)]


def make_judge(*, slow_seconds: float = 2.0, delay: float = 0.0) -> ScriptedJudge:
    app = FastAPI()
    judge = ScriptedJudge(app=app, slow_seconds=slow_seconds, delay=delay)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": REPORTED_MODEL, "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        found = _ANSWER.search(prompt)
        answer = found.group(1) if found else ""
        with judge.lock:
            judge.calls.append(answer)
            judge.seen[prompt] += 1
            first = judge.seen[prompt] == 1
        if judge.delay:
            with judge.lock:
                judge.in_flight += 1
                judge.max_in_flight = max(judge.max_in_flight, judge.in_flight)
            await asyncio.sleep(judge.delay)
            with judge.lock:
                judge.in_flight -= 1
        kind = directive(answer)
        if kind == "down":
            return JSONResponse({"error": "unavailable"}, status_code=503)
        if kind == "flaky" and first:
            return JSONResponse({"error": "boom"}, status_code=500)
        if kind == "slow" and first:
            await asyncio.sleep(judge.slow_seconds)
        return {
            "id": "x",
            "object": "chat.completion",
            "model": REPORTED_MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply_for(answer)},
                    "finish_reason": "stop",
                }
            ],
        }

    return judge


def item(index: int, answer: str, *, image: str | None = None, question: str = "How many dogs?") -> EvalItem:
    return EvalItem(
        id=f"i{index:03d}",
        question=question,
        reference="Two dogs.",
        image=image or f"img{index}.jpg",
        image_id=image or f"img{index}",
        answer=answer,
    )
