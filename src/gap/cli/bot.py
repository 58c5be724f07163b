"""`gap bot`: the Telegram bot that opens the Mini App and answers /leaderboard and /me."""

from __future__ import annotations

from typing import Annotated

import typer

from gap.cli._common import console, database, handle_errors, settings
from gap.errors import ConfigError


@handle_errors
def bot(
    webhook_url: Annotated[
        str | None,
        typer.Option(
            help="Public HTTPS URL Telegram posts updates to (webhook mode); default: long polling."
        ),
    ] = None,
    webhook_secret: Annotated[
        str | None,
        typer.Option(
            help="Secret Telegram sends with each webhook request; others are refused "
            "(default: GAP_TELEGRAM_WEBHOOK_SECRET).",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Webhook mode: interface to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="Webhook mode: port to listen on (behind your HTTPS proxy).")
    ] = 8081,
) -> None:
    """Run the Telegram bot (GAP_TELEGRAM_BOT_TOKEN; /start opens GAP_PUBLIC_URL as a Mini App)."""
    try:
        from gap.bot.context import BotContext
        from gap.bot.runner import run_polling, run_webhook
    except ImportError as exc:
        raise ConfigError(f"the bot needs the telegram extra: pip install 'gap[telegram]' ({exc})") from None
    current = settings()
    if not current.telegram_bot_token:
        raise ConfigError("set GAP_TELEGRAM_BOT_TOKEN to the token @BotFather gave you")
    if not current.public_url:
        console.print("[yellow]warning:[/yellow] GAP_PUBLIC_URL is not set: /start cannot open the game")
    ctx = BotContext(factory=database(current), settings=current)
    if webhook_url:
        console.print(f"GAP bot: webhook {webhook_url}, listening on {host}:{port}")
        secret = webhook_secret or current.telegram_webhook_secret
        run_webhook(ctx, url=webhook_url, host=host, port=port, secret=secret)
    else:
        console.print("GAP bot: long polling (Ctrl+C stops)")
        run_polling(ctx)
