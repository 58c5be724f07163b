"""Building and running the bot: long polling by default, or a webhook behind HTTPS.

Long polling needs no public address and suits one process. A webhook lets Telegram push updates
to ``--webhook-url`` (HTTPS, port 443, 80, 88 or 8443, usually through a reverse proxy to
``--host``/``--port``); ``--webhook-secret`` makes Telegram sign each request with a header that
the handler checks.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlparse

from aiogram import Bot, Dispatcher
from aiogram.types import BotCommand, MenuButtonWebApp, WebAppInfo

from gap.bot.context import BotContext
from gap.bot.handlers import make_router
from gap.errors import ConfigError

log = logging.getLogger(__name__)

COMMANDS = [
    BotCommand(command="start", description="Play GAP"),
    BotCommand(command="leaderboard", description="The best players (week, day)"),
    BotCommand(command="me", description="Your points and rank"),
]


def build_dispatcher(ctx: BotContext) -> Dispatcher:
    """A dispatcher with GAP's handlers; ``ctx`` reaches them as the ``gap`` argument."""
    dispatcher = Dispatcher()
    dispatcher.include_router(make_router())
    dispatcher["gap"] = ctx
    return dispatcher


def create_bot(ctx: BotContext) -> Bot:
    token = ctx.settings.telegram_bot_token
    if not token:
        raise ConfigError("the bot needs GAP_TELEGRAM_BOT_TOKEN (from @BotFather)")
    return Bot(token=token)


async def configure(bot: Bot, ctx: BotContext) -> None:
    """The command menu, and the chat's menu button opening the Mini App when served over HTTPS."""
    await bot.set_my_commands(COMMANDS)
    url = ctx.play_url
    if url and url.startswith("https://"):
        await bot.set_chat_menu_button(menu_button=MenuButtonWebApp(text="Play", web_app=WebAppInfo(url=url)))
    elif url:
        log.warning(
            "GAP_PUBLIC_URL is not HTTPS: Telegram opens Mini Apps over HTTPS only; /start links instead"
        )


async def _poll(ctx: BotContext) -> None:
    bot = create_bot(ctx)
    try:
        await configure(bot, ctx)
        await bot.delete_webhook(drop_pending_updates=False)  # polling and a webhook exclude each other
        await build_dispatcher(ctx).start_polling(bot, handle_signals=True)
    finally:
        await bot.session.close()


def run_polling(ctx: BotContext) -> None:
    """Ask Telegram for updates in a loop until interrupted (Ctrl+C)."""
    asyncio.run(_poll(ctx))


def run_webhook(ctx: BotContext, *, url: str, host: str, port: int, secret: str | None) -> None:
    """Serve updates that Telegram posts to ``url`` (registered on start, removed on stop)."""
    from aiogram.webhook.aiohttp_server import SimpleRequestHandler, setup_application
    from aiohttp import web

    parsed = urlparse(url)
    if parsed.scheme != "https":
        raise ConfigError(f"Telegram posts webhooks over HTTPS only; got {url!r}")
    bot = create_bot(ctx)
    dispatcher = build_dispatcher(ctx)

    async def on_startup(bot: Bot) -> None:
        await configure(bot, ctx)
        await bot.set_webhook(url, secret_token=secret)

    async def on_shutdown(bot: Bot) -> None:
        await bot.delete_webhook()

    dispatcher.startup.register(on_startup)
    dispatcher.shutdown.register(on_shutdown)
    app = web.Application()
    SimpleRequestHandler(dispatcher=dispatcher, bot=bot, secret_token=secret).register(
        app, path=parsed.path or "/"
    )
    setup_application(app, dispatcher, bot=bot)
    web.run_app(app, host=host, port=port)
