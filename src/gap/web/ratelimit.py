"""Rate limits at the edge: sign-ups and admin logins per client IP, questions per player.

The model is the expensive part, so questions (and hints) are limited per bearer token (one player), sign-ups
(guest and Telegram) and admin login attempts per IP. Counts live in this process by default; with
``GAP_REDIS_URL`` every replica shares them through Redis (the ``limits`` library, moving windows).
A refused request gets 429 with a JSON message and ``Retry-After``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import dataclass
from typing import Protocol

import limits
import limits.aio.strategies
import limits.strategies
from limits.storage import storage_from_string
from limits.util import WindowStats
from starlette.types import ASGIApp, Receive, Scope, Send

from gap.config import Settings
from gap.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    name: str
    method: str
    path: re.Pattern[str]
    per: str  # "ip" or "player"
    limit: limits.RateLimitItem


def _parse(name: str, value: str) -> limits.RateLimitItem:
    try:
        return limits.parse(value)
    except ValueError:
        raise ConfigError(f"GAP_RATE_{name.upper()}: {value!r} is not a rate such as '30/minute'") from None


def rules_from(settings: Settings) -> list[Rule]:
    return [
        Rule(
            "signups",
            "POST",
            re.compile(r"^/api/auth/(guest|telegram)$"),
            "ip",
            _parse("signups", settings.rate_signups),
        ),
        Rule(
            "questions",
            "POST",
            re.compile(r"^/api/rounds/[^/]+/(questions|hint)$"),  # one budget: both ask the model
            "player",
            _parse("questions", settings.rate_questions),
        ),
        Rule(
            "admin_login",
            "POST",
            re.compile(r"^/admin/login$"),
            "ip",
            _parse("admin_login", settings.rate_admin_login),
        ),
    ]


class Limiter(Protocol):
    async def hit(self, item: limits.RateLimitItem, *identifiers: str) -> bool: ...

    async def get_window_stats(self, item: limits.RateLimitItem, *identifiers: str) -> WindowStats: ...


class InProcessLimiter:
    """Moving windows in this process's memory. limits' synchronous memory storage guards its counts
    with threading locks, so it serves every event loop and thread; its asyncio twin binds to the first
    loop that uses it and fails requests served on another (a test client's, say)."""

    def __init__(self, prefix: str) -> None:
        self._limiter = limits.strategies.MovingWindowRateLimiter(
            storage_from_string("memory://", key_prefix=prefix)
        )

    async def hit(self, item: limits.RateLimitItem, *identifiers: str) -> bool:
        return self._limiter.hit(item, *identifiers)

    async def get_window_stats(self, item: limits.RateLimitItem, *identifiers: str) -> WindowStats:
        return self._limiter.get_window_stats(item, *identifiers)


def make_limiter(redis_url: str | None, prefix: str = "gap") -> Limiter:
    """Moving windows counted in this process's memory, or in Redis shared by every replica."""
    if not redis_url:
        return InProcessLimiter(prefix)
    if not redis_url.startswith(("redis://", "rediss://")):
        raise ConfigError(f"GAP_REDIS_URL must start with redis:// or rediss://, got {redis_url!r}")
    try:  # redis-py's asyncio client (the `redis` package), not limits' default coredis
        storage = storage_from_string(f"async+{redis_url}", key_prefix=prefix, implementation="redispy")
    except Exception as exc:  # a missing client library, a malformed URL
        raise ConfigError(f"cannot use GAP_REDIS_URL for rate limits: {exc}") from exc
    return limits.aio.strategies.MovingWindowRateLimiter(storage)


class RateLimits:
    def __init__(self, app: ASGIApp, *, rules: list[Rule], limiter: Limiter) -> None:
        self.app = app
        self.rules = rules
        self.limiter = limiter

    def _key(self, rule: Rule, scope: Scope) -> str | None:
        if rule.per == "ip":
            client = scope.get("client")
            return client[0] if client else "unknown"
        auth = dict(scope["headers"]).get(b"authorization", b"")
        if not auth:
            return None  # refused as unauthenticated by the route; nothing to count
        return hashlib.sha256(auth).hexdigest()[:32]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for rule in self.rules:
                if scope["method"] == rule.method and rule.path.match(scope["path"]):
                    key = self._key(rule, scope)
                    if key is not None and not await self.limiter.hit(rule.limit, rule.name, key):
                        stats = await self.limiter.get_window_stats(rule.limit, rule.name, key)
                        await _too_many(send, max(1, math.ceil(stats.reset_time - time.time())))
                        return
                    break
        await self.app(scope, receive, send)


async def _too_many(send: Send, retry_after: int) -> None:
    body = json.dumps({"detail": f"too many requests; try again in {retry_after} s"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(retry_after).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
