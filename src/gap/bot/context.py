"""What the bot's handlers need, passed in (never read from globals), so tests build their own."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from gap.config import Settings
from gap.services.game import Clock, utcnow


@dataclass(frozen=True)
class BotContext:
    factory: sessionmaker[Session]
    settings: Settings
    clock: Clock = utcnow

    @property
    def play_url(self) -> str | None:
        """The Mini App's address (``GAP_PUBLIC_URL``), or None when it is not configured."""
        return self.settings.public_url.rstrip("/") + "/" if self.settings.public_url else None
