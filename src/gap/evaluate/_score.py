"""Score answered items with a judge (or an offline metric) and summarise them with honest statistics.

A judge reply that does not parse is a failure: it is counted and reported beside the score, which is
the mean over parsed items (``failures_as_zero`` counts failures as 0 instead). Transport failures past
every retry are failures too, but are not cached, so the next run asks again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gap.data import QUESTION_TYPES
from gap.data._progress import progress_bar
from gap.errors import ConfigError
from gap.evaluate._items import EvalItem
from gap.evaluate._judge import (
    JudgeCache,
    JudgeError,
    JudgePrompt,
    JudgeReply,
    OpenAIJudge,
    judge_prompt,
    parse_score,
)
from gap.evaluate._offline import OFFLINE_METRICS, OfflineMetric, offline_score
from gap.evaluate._stats import DEFAULT_RESAMPLES, agreement, clustered_bootstrap

Failure = Literal["unparsed", "error", "no-answer"]
GPT_SCORE = "gpt-score"


@dataclass(frozen=True, slots=True)
class ItemScore:
    """One item's outcome: its parsed repeat scores, or why it has none."""

    item: EvalItem
    scores: tuple[float, ...] = ()
    failure: Failure | None = None
    replies: tuple[str, ...] = ()
    judge_model: str | None = None

    @property
    def score(self) -> float | None:
        return sum(self.scores) / len(self.scores) if self.scores else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.item.id,
            "type": self.item.type,
            "image_id": self.item.image_id,
            "score": self.score,
            "scores": list(self.scores),
            "failure": self.failure,
            "replies": list(self.replies),
            "judge_model": self.judge_model,
        }


@dataclass
class JudgeRun:
    """What a judge pass cost: requests sent and replies served from the cache."""

    calls: int = 0
    cached: int = 0
    judge_models: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def served_from_cache(self) -> None:
        with self._lock:
            self.cached += 1


def _judge_one(
    item: EvalItem,
    judge: OpenAIJudge,
    cache: JudgeCache,
    prompt: JudgePrompt,
    repeats: int,
    run: JudgeRun,
) -> ItemScore:
    if item.answer is None:
        return ItemScore(item, failure="no-answer")
    replies: list[JudgeReply] = []
    for repeat in range(repeats):
        key = JudgeCache.key(judge.model, prompt, item.question, item.answer, item.reference, repeat)
        reply = cache.get(key)
        if reply is None:
            text = prompt.render(item.question, item.answer, item.reference)
            try:
                reply = judge.ask(text, repeat=repeat)
            except JudgeError:
                return ItemScore(item, failure="error", replies=tuple(r.text for r in replies))
            cache.put(key, judge.model, prompt, reply)
        else:
            run.served_from_cache()
        replies.append(reply)
    parsed = tuple(s for s in (parse_score(r.text) for r in replies) if s is not None)
    return ItemScore(
        item,
        scores=parsed,
        failure=None if parsed else "unparsed",
        replies=tuple(r.text for r in replies),
        judge_model=replies[-1].model_id,
    )


def judge_items(
    items: Sequence[EvalItem],
    judge: OpenAIJudge,
    cache: JudgeCache,
    prompt: JudgePrompt,
    *,
    repeats: int = 1,
    concurrency: int = 8,
    advance: Callable[[], None] | None = None,
) -> tuple[list[ItemScore], JudgeRun]:
    """Every item judged ``repeats`` times, at most ``concurrency`` requests in flight, in input order."""
    run = JudgeRun()
    calls_before = judge.calls

    def task(item: EvalItem) -> ItemScore:
        result = _judge_one(item, judge, cache, prompt, repeats, run)
        if advance is not None:
            advance()
        return result

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        results = list(pool.map(task, items))
    run.calls = judge.calls - calls_before
    run.judge_models = {r.judge_model for r in results if r.judge_model}
    return results, run


def offline_items(items: Sequence[EvalItem], metric: OfflineMetric) -> tuple[list[ItemScore], int]:
    """Items scored by an offline metric, and how many it skipped (does not apply to them)."""
    results: list[ItemScore] = []
    skipped = 0
    for item in items:
        if item.answer is None:
            results.append(ItemScore(item, failure="no-answer"))
            continue
        score = offline_score(metric, item, item.answer)
        if score is None:
            skipped += 1
        else:
            results.append(ItemScore(item, scores=(score,)))
    return results, skipped


def _summary(
    results: Sequence[ItemScore], *, failures_as_zero: bool, resamples: int, seed: int
) -> dict[str, Any]:
    values: list[float] = []
    clusters: list[str] = []
    failures = 0
    for result in results:
        score = result.score
        if score is None:
            failures += 1
            if not failures_as_zero:
                continue
            score = 0.0
        values.append(score)
        clusters.append(result.item.image_id)
    interval = clustered_bootstrap(values, clusters, resamples=resamples, seed=seed)
    return {
        "score": _round(interval.mean),
        "ci_low": _round(interval.low),
        "ci_high": _round(interval.high),
        "n": len(values),
        "failures": failures,
    }


def _round(value: float) -> float | None:
    return None if value != value else round(value, 4)  # nan -> null in JSON


def summarise(
    results: Sequence[ItemScore],
    *,
    metric: str,
    failures_as_zero: bool = False,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """``{"metric", "score", "ci_low", "ci_high", "n", "failures", "failure_kinds", "by_type", ...}``.

    ``n`` counts the items in the mean: the parsed ones, or every one with ``failures_as_zero``.
    """
    report: dict[str, Any] = {"metric": metric}
    report.update(_summary(results, failures_as_zero=failures_as_zero, resamples=resamples, seed=seed))
    kinds: dict[str, int] = {}
    for result in results:
        if result.failure:
            kinds[result.failure] = kinds.get(result.failure, 0) + 1
    report["failure_kinds"] = kinds
    report["failures_as_zero"] = failures_as_zero
    report["by_type"] = {
        qtype: _summary(group, failures_as_zero=failures_as_zero, resamples=resamples, seed=seed)
        for qtype in QUESTION_TYPES
        if (group := [r for r in results if r.item.type == qtype])
    }
    repeated = [r.scores for r in results if len(r.scores) >= 2]
    if repeated:
        agreed = agreement(repeated)
        report["agreement"] = {
            "items": agreed.items,
            "identical": _round(agreed.identical),
            "mean_abs_diff": _round(agreed.mean_abs_diff),
        }
    return report


@dataclass(frozen=True)
class JudgeSetup:
    """Where and how to ask the judge of the GPT score."""

    model: str
    base_url: str
    api_key: str = "EMPTY"
    cache: Path | None = None
    with_question: bool = False
    repeats: int = 1
    concurrency: int = 8
    timeout: float = 60.0
    retries: int = 4
    backoff: float = 1.0


def check_judge(metric: str, judge: JudgeSetup | None) -> None:
    """Refuse a GPT score without a usable judge, before any answer or judge call is paid for."""
    if metric != GPT_SCORE:
        return
    if judge is None:
        raise ConfigError("the GPT score needs a judge model: pass --judge (or set GAP_JUDGE_MODEL)")
    if judge.repeats < 1:
        raise ConfigError("--repeats must be at least 1")


def score_items(
    items: Sequence[EvalItem],
    *,
    metric: str = GPT_SCORE,
    judge: JudgeSetup | None = None,
    failures_as_zero: bool = False,
    show_progress: bool = False,
    resamples: int = DEFAULT_RESAMPLES,
) -> tuple[dict[str, Any], list[ItemScore]]:
    """The report and per-item outcomes of ``items`` under ``metric`` (``gpt-score`` or an offline one)."""
    extra: dict[str, Any] = {}
    check_judge(metric, judge)
    if metric == GPT_SCORE:
        assert judge is not None  # check_judge refused the GPT score without one
        prompt = judge_prompt(with_question=judge.with_question)
        client = OpenAIJudge(
            judge.model,
            base_url=judge.base_url,
            api_key=judge.api_key,
            timeout=judge.timeout,
            retries=judge.retries,
            backoff=judge.backoff,
        )
        cache = JudgeCache(judge.cache or Path("judge-cache.sqlite3"))
        try:
            with progress_bar("judging", len(items), enabled=show_progress) as advance:
                results, run = judge_items(
                    items,
                    client,
                    cache,
                    prompt,
                    repeats=judge.repeats,
                    concurrency=judge.concurrency,
                    advance=advance,
                )
        finally:
            client.close()
            cache.close()
        extra = {
            "judge": {
                "requested": judge.model,
                "reported": sorted(run.judge_models),
                "base_url": judge.base_url,
                "prompt_version": prompt.version,
                "prompt_hash": prompt.hash,
                "temperature": 0,
                "repeats": judge.repeats,
                "calls": run.calls,
                "cached": run.cached,
            }
        }
    elif metric in OFFLINE_METRICS:
        results, skipped = offline_items(items, metric)
        extra = {"skipped": skipped}
    else:
        choices = ", ".join((GPT_SCORE, *OFFLINE_METRICS))
        raise ConfigError(f"unknown metric {metric!r}: expected one of {choices}")
    report = summarise(results, metric=metric, failures_as_zero=failures_as_zero, resamples=resamples)
    report["items"] = len(items)
    report.update(extra)
    return report, results
