"""Game rules: sessions, rounds, tainting and points, as pure code."""

from gap.game.rules import (
    EndReason,
    GameRules,
    PlannedRound,
    Pool,
    Verdict,
    draw_instructed,
    is_expired,
    plan_session,
    price_of_wrong,
    round_deadline,
    round_ends_after,
    seconds_left,
    settled_amount,
)
from gap.game.taint import (
    PLAIN_INSTRUCTION,
    SYSTEM_PROMPT,
    TAINT_INSTRUCTION,
    TurnPrompt,
    instruction_for,
    turn_prompt,
)

__all__ = [
    "PLAIN_INSTRUCTION",
    "SYSTEM_PROMPT",
    "TAINT_INSTRUCTION",
    "EndReason",
    "GameRules",
    "PlannedRound",
    "Pool",
    "TurnPrompt",
    "Verdict",
    "draw_instructed",
    "instruction_for",
    "is_expired",
    "plan_session",
    "price_of_wrong",
    "round_deadline",
    "round_ends_after",
    "seconds_left",
    "settled_amount",
    "turn_prompt",
]
