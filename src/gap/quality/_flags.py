"""Suspicious play: flags on a player's verdicts (issue 12, abuse), for an operator to look at.

Pure: per-player figures in, flags out; :mod:`gap.services.flags` reads the figures from the
database. A flag is a reason to look, not a verdict on the player: the reliability model already
gives an always-Wrong player little weight (METHOD.md section 2), and a shared IP can be a school.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ALWAYS_WRONG = "always-wrong"
SUB_SECOND = "sub-second"
MANY_ACCOUNTS = "many-accounts"


@dataclass(frozen=True)
class PlayStats:
    """One player's verdicts, as the flags need them."""

    player_id: str
    name: str
    verdicts: int
    wrong: int
    timed: int
    """Verdicts whose answer time is known (the median below is over these)."""
    median_verdict_s: float | None
    """Median seconds from the model's answer to the player's verdict."""
    accounts_on_ip: int
    """Accounts signed up from this player's sign-up IP, theirs included (0: IP unknown)."""

    @property
    def wrong_share(self) -> float | None:
        return self.wrong / self.verdicts if self.verdicts else None


@dataclass(frozen=True)
class FlagRules:
    """When a player is flagged; the minimum counts keep a short unlucky run from being flagged."""

    wrong_share: float = 0.9
    min_verdicts: int = 20
    fast_median_s: float = 1.0
    min_timed: int = 10
    accounts_per_ip: int = 3
    """Flag every account of an IP with at least this many sign-ups."""


@dataclass(frozen=True)
class Flagged:
    stats: PlayStats
    flags: tuple[str, ...]
    reasons: tuple[str, ...]


def flags_of(stats: PlayStats, rules: FlagRules = FlagRules()) -> Flagged:
    """The flags one player earns under ``rules``, each with its reason in words."""
    found: list[tuple[str, str]] = []
    share = stats.wrong_share
    if stats.verdicts >= rules.min_verdicts and share is not None and share >= rules.wrong_share:
        found.append((ALWAYS_WRONG, f"{stats.wrong} of {stats.verdicts} verdicts Wrong"))
    median = stats.median_verdict_s
    if stats.timed >= rules.min_timed and median is not None and median < rules.fast_median_s:
        found.append((SUB_SECOND, f"median {median:.2f} s from answer to verdict over {stats.timed}"))
    if stats.accounts_on_ip >= rules.accounts_per_ip:
        found.append((MANY_ACCOUNTS, f"{stats.accounts_on_ip} accounts signed up from one IP"))
    return Flagged(stats, tuple(f for f, _ in found), tuple(r for _, r in found))


def flag_players(players: Iterable[PlayStats], rules: FlagRules = FlagRules()) -> list[Flagged]:
    """The flagged players only, most flags first, then by name."""
    flagged = [f for f in (flags_of(p, rules) for p in players) if f.flags]
    return sorted(flagged, key=lambda f: (-len(f.flags), f.stats.name, f.stats.player_id))
