"""Logging in: guests, and Telegram Mini App users vouched for by Telegram's signed ``initData``."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from pydantic import BaseModel, Field

from gap.config import Settings
from gap.db.engine import transaction
from gap.services.flags import ip_hash, ip_hash_key
from gap.services.players import create_player, login_telegram
from gap.services.telegram import MAX_INIT_DATA_CHARS, validate_init_data
from gap.web.deps import AppSettings, Context
from gap.web.errors import error_responses
from gap.web.schemas import GuestIn, TokenOut

router = APIRouter(prefix="/api/auth", tags=["auth"])


class TelegramIn(BaseModel):
    init_data: str = Field(
        max_length=MAX_INIT_DATA_CHARS,
        description="`Telegram.WebApp.initData`, exactly as the Mini App received it.",
    )


def _signup_ip(request: Request, settings: Settings) -> str | None:
    """The keyed hash of the caller's IP (the IP the rate limits see), for the many-accounts flag."""
    return ip_hash(ip_hash_key(settings), request.client.host if request.client else None)


@router.post("/guest", response_model=TokenOut, status_code=status.HTTP_200_OK)
def guest(body: GuestIn, ctx: Context, request: Request, settings: AppSettings) -> TokenOut:
    """Create a guest player; keep the token, it is shown only once."""
    signup_ip = _signup_ip(request, settings)
    with transaction(ctx.factory) as db:
        player, token = create_player(db, name=body.name, now=ctx.clock(), signup_ip_hash=signup_ip)
        return TokenOut(player_id=player.id, token=token)


@router.post(
    "/telegram",
    response_model=TokenOut,
    responses=error_responses({401: "Unsigned, tampered or stale initData."}),
)
def telegram(body: TelegramIn, ctx: Context, settings: AppSettings, request: Request) -> TokenOut:
    """Log in from the Telegram Mini App: the same token as a guest's, linked to the Telegram user.

    The first login creates the player; later ones return a fresh token for the same player.
    """
    now = ctx.clock()
    user = validate_init_data(
        body.init_data,
        bot_token=settings.telegram_bot_token or "",
        max_age_s=settings.telegram_auth_max_age,
        now=now,
    )
    with transaction(ctx.factory) as db:
        player, token = login_telegram(
            db,
            telegram_id=user.id,
            name=user.display_name,
            now=now,
            signup_ip_hash=_signup_ip(request, settings),
        )
        return TokenOut(player_id=player.id, token=token)
