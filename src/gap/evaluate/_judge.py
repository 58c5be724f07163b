"""The GPT-score judge: the authors' prompt, strict reply parsing, an OpenAI-compatible client, a cache.

The default prompt is the authors' (fraction-ai/GAP ``evaluate/gpt_score/evaluate_model_with_gpt.py``,
Apache-2.0): it shows the judge the reference and the answer only, so our figures compare with the
paper's. Each prompt has a version and a hash, recorded with every score. Replies are cached raw on disk
per (judge, prompt, question, answer, reference, repeat) and parsed when read, so a re-run makes no judge
call and a change of parser needs no new calls.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gap.errors import ModelError

_AUTHORS_TEMPLATE = """
Please evaluate the model's answer based on the following criteria compared to the correct answer:

1. **Correct Answer**: "{correct_answer}"
2. **Model Answer**: "{model_answer}"

Criteria for evaluation:
- **Existence**: Does the model's answer correctly identify the existence or non-existence of objects or elements described in the correct answer?
- **Position**: Does the model's answer accurately describe the position or location of objects or elements as stated in the correct answer?
- **Count**: Does the model's answer correctly state the number of objects or elements mentioned in the correct answer?
- **Color**: Does the model's answer accurately describe the color of objects or elements as indicated in the correct answer?

Assign a score from 0 to 1 based on how well the model's answer meets these criteria:
- A score of "1" means the model's answer fully meets all criteria, accurately reflecting existence, position, count, and color as described in the correct answer.
- A score of "0" means the model's answer fails to meet any of the criteria, showing no alignment with the correct answer.
- Scores between "0" and "1" should reflect partial correctness, where the model's answer meets some criteria but not all, or has minor inaccuracies.

Carefully consider each criterion before deciding. What is the appropriate score (between 0 and 1) that best represents the factual correctness of the model's answer? Just return the score as a single number.
"""  # noqa: E501 - the authors' text, unchanged

_QUESTION_LINE = '0. **Question**: "{question}"\n'


@dataclass(frozen=True, slots=True)
class JudgePrompt:
    """A versioned judge prompt; ``hash`` identifies its exact text."""

    version: str
    template: str
    with_question: bool

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.template.encode("utf-8")).hexdigest()[:16]

    def render(self, question: str, answer: str, reference: str) -> str:
        return self.template.format(question=question, model_answer=answer, correct_answer=reference)


def judge_prompt(*, with_question: bool = False) -> JudgePrompt:
    """The authors' prompt (``gap-vqa-v1``), or the same with the question first (``gap-vqa-v1-q``)."""
    template = _AUTHORS_TEMPLATE.replace("{", "{{").replace("}", "}}")
    template = template.replace("{{correct_answer}}", "{correct_answer}")
    template = template.replace("{{model_answer}}", "{model_answer}")
    if not with_question:
        return JudgePrompt("gap-vqa-v1", template, False)
    marker = "1. **Correct Answer**"
    template = template.replace(marker, _QUESTION_LINE + marker)
    return JudgePrompt("gap-vqa-v1-q", template, True)


_NUMBER = re.compile(r"(?<![\w.])-?(?:\d+(?:\.\d+)?|\.\d+)(?![\w])")
_OUT_OF_ONE = re.compile(r"\s*(?:/|out of)\s*1(?:\.0+)?\b", re.IGNORECASE)


def parse_score(reply: str) -> float | None:
    """The score in a judge reply, or ``None`` when there is no single number in [0, 1] to read.

    Accepted: a bare number ("0.8", "0.8."), JSON (``0.8`` or ``{"score": 0.8}``), or prose holding one
    number ("Score: 0.8", "I'd give it 0.8/1"). Two different numbers, or one outside [0, 1], are
    ambiguous and fail: a failure is counted, never guessed.
    """
    text = reply.strip()
    try:
        value: Any = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, dict):
        value = value.get("score")
    if isinstance(value, bool) or not isinstance(value, int | float):
        numbers = {float(m) for m in _NUMBER.findall(_OUT_OF_ONE.sub("", text))}
        if len(numbers) != 1:
            return None
        value = numbers.pop()
    score = float(value)
    return score if 0.0 <= score <= 1.0 else None


@dataclass(frozen=True, slots=True)
class JudgeReply:
    text: str
    model_id: str
    """The model id the server reported in its response (a dated snapshot where it gives one)."""


class JudgeError(ModelError):
    """The judge could not be asked (transport errors past every retry, or an HTTP error)."""


_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAIJudge:
    """A judge behind an OpenAI-compatible ``/chat/completions``: temperature 0, retries with backoff.

    Transport errors, timeouts and HTTP 408/429/5xx are retried ``retries`` times, waiting
    ``backoff * 2**attempt`` seconds (with jitter) in between; other HTTP errors fail at once. One
    ``httpx.Client`` is shared by every thread. ``calls`` counts requests sent.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key: str = "EMPTY",
        timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 1.0,
        max_tokens: int = 16,
        seed: int = 0,
    ) -> None:
        self.model = model
        self.base_url = base_url
        self.api_key = api_key
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_tokens = max_tokens
        self.seed = seed
        self.calls = 0
        self._count_lock = threading.Lock()
        self._client = httpx.Client(
            timeout=timeout,
            headers={"Authorization": f"Bearer {api_key}"},
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    def close(self) -> None:
        self._client.close()

    def ask(self, prompt: str, *, repeat: int = 0) -> JudgeReply:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0,
            "max_tokens": self.max_tokens,
            "seed": self.seed + repeat,
            "stream": False,
        }
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))
            with self._count_lock:
                self.calls += 1
            try:
                response = self._client.post(self.url, json=body)
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code in _RETRY_STATUS:
                last = f"HTTP {response.status_code}"
                continue
            if response.status_code >= 400:
                raise JudgeError(f"{self.url} answered HTTP {response.status_code}: {response.text[:200]}")
            return self._reply(response)
        raise JudgeError(f"{self.url} failed {self.retries + 1} times; last: {last}")

    def _reply(self, response: httpx.Response) -> JudgeReply:
        try:
            payload = response.json()
            content = payload["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise JudgeError(f"{self.url} sent an unexpected body: {response.text[:200]}") from exc
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return JudgeReply(str(content or ""), str(payload.get("model") or self.model))


class JudgeCache:
    """Raw judge replies in SQLite, keyed by everything that determines them; safe across threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        # a cache: losing the last replies to a power cut costs a few calls; an fsync per reply costs more
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, judge TEXT NOT NULL, "
            "prompt_version TEXT NOT NULL, reply TEXT NOT NULL, model_id TEXT NOT NULL)"
        )

    @staticmethod
    def key(judge: str, prompt: JudgePrompt, question: str, answer: str, reference: str, repeat: int) -> str:
        parts = [judge, prompt.version, prompt.hash, question, answer, reference, repeat]
        return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()

    def get(self, key: str) -> JudgeReply | None:
        with self._lock:
            row = self._conn.execute("SELECT reply, model_id FROM replies WHERE key = ?", (key,)).fetchone()
        return None if row is None else JudgeReply(row[0], row[1])

    def put(self, key: str, judge: str, prompt: JudgePrompt, reply: JudgeReply) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?)",
                (key, judge, prompt.version, reply.text, reply.model_id),
            )

    def close(self) -> None:
        self._conn.close()
