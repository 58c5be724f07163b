"""Text that every database and encoder accepts (no NUL characters, no lone surrogates), and the one
normal form of a question."""

from __future__ import annotations

import re

_SURROGATE = re.compile("[\ud800-\udfff]")
_SPACES = re.compile(r"\s+")


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as it is (PostgreSQL refuses NUL, UTF-8 lone surrogates), or None."""
    if "\x00" in value:
        return "contains a NUL character (\\u0000)"
    if _SURROGATE.search(value):
        return "contains a lone surrogate (not valid Unicode)"
    return None


def clean_text(value: str) -> str:
    """``value`` without NUL characters, each lone surrogate replaced by U+FFFD.

    File names decoded with ``surrogateescape`` (undecodable bytes on Linux) land here too.
    """
    return _SURROGATE.sub("\ufffd", value.replace("\x00", ""))


def normalise_question(value: str) -> str:
    """Lower case, single spaces, no trailing punctuation: "What colour?" == "what  colour"."""
    return _SPACES.sub(" ", value.lower()).strip().rstrip("?!. ")
