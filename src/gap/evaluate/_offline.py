"""Offline judges, for when no judge model is at hand; each is its own metric, never the GPT score.

- ``exact-match``: normalised answer equals normalised reference (lower case, no punctuation or
  articles, number words as digits), every item.
- ``numeric``: counting questions only; the count read from words or digits on both sides must agree.
- ``yes-no``: existence questions whose reference starts with yes or no; the answer's first yes/no word
  must agree.

Items a judge does not apply to (other question types, a reference with no count or no yes/no) are left
out of that metric and counted as ``skipped``; an answer with nothing to read scores 0.
"""

from __future__ import annotations

import re
from typing import Literal

from gap.evaluate._items import EvalItem

OfflineMetric = Literal["exact-match", "numeric", "yes-no"]
OFFLINE_METRICS: tuple[OfflineMetric, ...] = ("exact-match", "numeric", "yes-no")

_WORDS = {
    "no": 0, "none": 0, "zero": 0, "one": 1, "a single": 1, "single": 1, "two": 2, "a pair of": 2,
    "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "eleven": 11, "twelve": 12, "a dozen": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
}  # fmt: skip
_COUNT = re.compile(
    r"\b(\d+|" + "|".join(sorted((re.escape(w) for w in _WORDS), key=len, reverse=True)) + r")\b"
)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = re.compile(r"[^\w\s]")
_YES_NO = re.compile(r"\b(yes|no)\b")


def normalise(text: str) -> str:
    """Lower case, punctuation and articles dropped, number words as digits, spaces collapsed."""
    text = _PUNCT.sub(" ", text.lower())
    text = re.sub(
        r"\b(" + "|".join(w for w in _WORDS if " " not in w and w not in ("no", "single")) + r")\b",
        lambda m: str(_WORDS[m.group(1)]),
        text,
    )
    return " ".join(_ARTICLES.sub(" ", text).split())


def read_count(text: str) -> int | None:
    """The first count written in ``text`` as digits or words ("two dogs", "3", "no people" -> 0)."""
    match = _COUNT.search(text.lower())
    if match is None:
        return None
    token = match.group(1)
    return int(token) if token.isdigit() else _WORDS[token]


def read_yes_no(text: str) -> bool | None:
    match = _YES_NO.search(text.lower())
    return None if match is None else match.group(1) == "yes"


def offline_score(metric: OfflineMetric, item: EvalItem, answer: str) -> float | None:
    """The item's score under ``metric``, or ``None`` when the metric does not apply to the item."""
    if metric == "exact-match":
        return float(normalise(answer) == normalise(item.reference))
    if metric == "numeric":
        expected = read_count(item.reference) if item.type == "counting" else None
        if expected is None:
            return None
        return float(read_count(answer) == expected)
    first_words = " ".join(item.reference.lower().split()[:2])
    expected_yes = read_yes_no(first_words) if item.type == "existence" else None
    if expected_yes is None:
        return None
    return float(read_yes_no(answer) == expected_yes)
