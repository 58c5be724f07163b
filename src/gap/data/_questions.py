"""What kind of visual skill a question probes, by keywords: the mix the dataset card reports.

The categories follow the paper's GPT-score aspects (count, colour, position, existence) plus text
reading. The first rule that matches wins: counting, then text (reading is the most specific skill),
colour, position and existence.
"""

from __future__ import annotations

import re
from typing import Literal

QuestionType = Literal["counting", "colour", "position", "existence", "text", "other"]
QUESTION_TYPES: tuple[QuestionType, ...] = ("counting", "colour", "position", "existence", "text", "other")

_RULES: tuple[tuple[QuestionType, re.Pattern[str]], ...] = (
    ("counting", re.compile(r"\bhow many\b|\bnumber of\b|\bcount\b|\bhow much\b")),
    (
        "text",
        re.compile(
            r"\bwritten\b|\btext\b|\bread\b|\bsays?\b|\bwords?\b|\bletters?\b|\bwhat time\b|\bthe time\b|"
            r"\bwhat(?:'s| is) the (number|brand|name)\b"
        ),
    ),
    ("colour", re.compile(r"\bcolou?rs?\b|\bcolou?red\b|\bshade\b|\bhue\b")),
    (
        "position",
        re.compile(
            r"\bwhere\b|\bleft\b|\bright\b|\babove\b|\bbelow\b|\bbehind\b|\bin front\b|\bnext to\b|"
            r"\bbeside\b|\bbetween\b|\bunder(neath)?\b|\bon top\b|\bposition\b|\blocated\b|\bcorner\b|"
            r"\bwhich (side|hand|ear|leg|arm|eye|foot|direction)\b"
        ),
    ),
    (
        "existence",
        re.compile(
            r"^(is|are|was|were|does|do|can|could|has|have)\b.*\b(there|any|visible|present|exists?|see)\b|"
            r"\bexists?\b"
        ),
    ),
)


def question_type(question: str) -> QuestionType:
    text = " ".join(question.lower().split())
    for name, pattern in _RULES:
        if pattern.search(text):
            return name
    return "other"
