"""Evaluation: answers of a model on an evaluation set, the GPT score and offline metrics, comparisons.

Nothing heavy loads on import: torch, transformers and matplotlib are imported by the functions that
need them.
"""

from gap.evaluate._items import ANSWERS_FILE, RUN_FILE, EvalItem, load_items, read_answers
from gap.evaluate._judge import (
    JudgeCache,
    JudgeError,
    JudgePrompt,
    JudgeReply,
    OpenAIJudge,
    judge_prompt,
    parse_score,
)
from gap.evaluate._offline import OFFLINE_METRICS, OfflineMetric, normalise, offline_score, read_count
from gap.evaluate._score import GPT_SCORE, ItemScore, JudgeRun, judge_items, offline_items, summarise
from gap.evaluate._stats import (
    Agreement,
    Interval,
    agreement,
    clustered_bootstrap,
    paired_bootstrap_p,
    wilcoxon_p,
)

__all__ = [
    "ANSWERS_FILE",
    "GPT_SCORE",
    "OFFLINE_METRICS",
    "RUN_FILE",
    "Agreement",
    "EvalItem",
    "Interval",
    "ItemScore",
    "JudgeCache",
    "JudgeError",
    "JudgePrompt",
    "JudgeReply",
    "JudgeRun",
    "OfflineMetric",
    "OpenAIJudge",
    "agreement",
    "clustered_bootstrap",
    "judge_items",
    "judge_prompt",
    "load_items",
    "normalise",
    "offline_items",
    "offline_score",
    "paired_bootstrap_p",
    "parse_score",
    "read_answers",
    "read_count",
    "summarise",
    "wilcoxon_p",
]
