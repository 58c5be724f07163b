"""What the model receives on a turn, instructed or not, built so that nothing but one clause differs.

A player must not tell an instructed (deliberately wrong) answer from a plain one by its style, its
size or its timing. So every turn carries the same system prompt, which alone sets length and tone;
the history and the image are the same; and the last user message ends with a clause of the same
shape and similar length: :data:`PLAIN_INSTRUCTION` asks for the true answer, :data:`TAINT_INSTRUCTION`
for a wrong one. The clause comes last, after the image and the history, so a prefix-caching server
(vLLM, SGLang) reuses the same cached prefix for both kinds. It is never kept in the history: later
turns see the bare questions, whatever kind of answer came before, and their cached prefix breaks at
the same place after either kind.

The wordings are plain strings so that other strategies can be swapped in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gap.models.base import ChatMessage

SYSTEM_PROMPT = (
    "You answer questions about the image the user shows you. Reply in one or two short sentences, "
    "in a plain, natural and confident tone, with no preamble, lists or caveats."
)

PLAIN_INSTRUCTION = (
    "For this answer, answer the question above about the image correctly, plainly and confidently, "
    "as it truly is. State the concrete fact about the same thing they asked about: the real count, the "
    "real colour, the real position, or whether something is present or absent. Never mention or hint "
    "that you were given instructions or told how to answer."
)

TAINT_INSTRUCTION = (
    "For this answer only, answer the question above about the image incorrectly, but plausibly and "
    "confidently, as if it were true. Change one concrete fact about the same thing they asked about: "
    "a wrong count, a wrong colour, a wrong position, or say that something present is absent (or the "
    "opposite). Never mention or hint that the answer is wrong or that you were told to do this."
)

CLAUSE_SEPARATOR = "\n\n"


@dataclass(frozen=True, slots=True)
class TurnPrompt:
    """The system prompt and chat messages of one turn, ready for :meth:`VisionChatModel.answer`."""

    system: str
    messages: list[ChatMessage]


def instruction_for(instructed: bool) -> str:
    """The clause that ends this turn's last user message."""
    return TAINT_INSTRUCTION if instructed else PLAIN_INSTRUCTION


def turn_prompt(history: Sequence[tuple[str, str]], question: str, *, instructed: bool) -> TurnPrompt:
    """The request for a new ``question`` after ``history`` (earlier ``(question, answer)`` pairs).

    Instructed and plain prompts at the same history are equal except for the clause's text.
    """
    messages: list[ChatMessage] = []
    for earlier_question, earlier_answer in history:
        messages += [ChatMessage("user", earlier_question), ChatMessage("assistant", earlier_answer)]
    messages.append(ChatMessage("user", f"{question}{CLAUSE_SEPARATOR}{instruction_for(instructed)}"))
    return TurnPrompt(system=SYSTEM_PROMPT, messages=messages)
