"""Telegram Mini App logins: check the signed ``initData`` a Mini App receives, with the stdlib only.

Telegram signs ``initData`` (a URL-encoded query string) with a key derived from the bot token:
``secret = HMAC_SHA256(key="WebAppData", msg=bot_token)`` and
``hash = hex(HMAC_SHA256(key=secret, msg=data_check_string))``, where the data-check string is every
field except ``hash``, as ``key=value`` lines sorted by key. Only someone holding the bot token can
produce a valid hash, so a valid one proves Telegram vouches for the user. A stale ``auth_date`` is
refused too, so a leaked ``initData`` cannot log in forever (aiogram's helper does not check that).

See https://core.telegram.org/bots/webapps#validating-data-received-via-the-mini-app
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qsl

from sqlalchemy import select
from sqlalchemy.orm import Session

from gap.db.models import Player
from gap.errors import AuthError

MAX_INIT_DATA_CHARS = 8192
FUTURE_SKEW_S = 300.0
"""``auth_date`` may run this far ahead of our clock (clocks drift) before it is refused."""


@dataclass(frozen=True)
class TelegramUser:
    """The Telegram user an ``initData`` vouches for."""

    id: int
    first_name: str
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = None

    @property
    def display_name(self) -> str:
        """A player name: first and last name, else the username, else a neutral fallback."""
        name = " ".join(part for part in (self.first_name, self.last_name) if part).strip()
        return (name or self.username or f"Player {self.id}")[:64]


def _secret_key(bot_token: str) -> bytes:
    return hmac.new(b"WebAppData", bot_token.encode(), hashlib.sha256).digest()


def data_check_string(fields: dict[str, str]) -> str:
    """Every field except ``hash``, as ``key=value`` lines sorted by key (Telegram's recipe)."""
    return "\n".join(f"{key}={fields[key]}" for key in sorted(fields) if key != "hash")


def init_data_hash(fields: dict[str, str], bot_token: str) -> str:
    """The hex hash Telegram would attach to ``fields`` for this bot."""
    return hmac.new(_secret_key(bot_token), data_check_string(fields).encode(), hashlib.sha256).hexdigest()


def _parse(init_data: str) -> dict[str, str]:
    if not init_data or len(init_data) > MAX_INIT_DATA_CHARS:
        raise AuthError("Telegram initData is empty or too long")
    try:
        pairs = parse_qsl(init_data, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise AuthError("Telegram initData is not a query string") from None
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise AuthError("Telegram initData repeats a field")
    return fields


def _user(raw: str | None) -> TelegramUser:
    if not raw:
        raise AuthError("Telegram initData carries no user")
    try:
        data = json.loads(raw)
        user_id = data["id"]
        if not isinstance(user_id, int) or isinstance(user_id, bool) or user_id <= 0:
            raise ValueError("bad id")
    except (ValueError, KeyError, TypeError):
        raise AuthError("Telegram initData has a malformed user") from None

    def text(key: str) -> str | None:
        value = data.get(key)
        return value if isinstance(value, str) and value.strip() else None

    return TelegramUser(
        id=user_id,
        first_name=text("first_name") or "",
        last_name=text("last_name"),
        username=text("username"),
        language_code=text("language_code"),
    )


def validate_init_data(init_data: str, *, bot_token: str, max_age_s: float, now: datetime) -> TelegramUser:
    """The user of a genuine, fresh ``initData``; anything else raises :class:`AuthError`.

    Checks, in order: well-formed, signed (``hash`` present), the signature matches (constant-time),
    ``auth_date`` is at most ``max_age_s`` old and not in the future, and a user is named.
    """
    if not bot_token:
        raise AuthError("Telegram login is not enabled on this server")
    fields = _parse(init_data)
    received = fields.get("hash", "")
    if not received:
        raise AuthError("Telegram initData is not signed")
    expected = init_data_hash(fields, bot_token)
    if not hmac.compare_digest(expected.encode(), received.lower().encode()):
        raise AuthError("Telegram initData signature does not match")
    try:
        auth_date = int(fields["auth_date"])
    except (KeyError, ValueError):
        raise AuthError("Telegram initData has no valid auth_date") from None
    age = now.timestamp() - auth_date
    if age > max_age_s:
        raise AuthError("Telegram initData has expired; reopen the game from Telegram")
    if age < -FUTURE_SKEW_S:
        raise AuthError("Telegram initData is dated in the future")
    return _user(fields.get("user"))


def find_telegram_player(db: Session, telegram_id: int) -> Player | None:
    """The player linked to a Telegram user, if they ever opened the Mini App (for the bot)."""
    return db.scalar(select(Player).where(Player.telegram_id == telegram_id))
