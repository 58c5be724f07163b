"""aiogram handlers: each one parses the update, asks :mod:`gap.bot.replies`, and answers.

The database is synchronous, so replies are computed in a worker thread and the event loop keeps
serving other chats meanwhile.
"""

from __future__ import annotations

import asyncio

from aiogram import Router
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, Message, WebAppInfo

from gap.bot import replies
from gap.bot.context import BotContext


def play_keyboard(ctx: BotContext) -> InlineKeyboardMarkup | None:
    """A button that opens the game: as a Mini App over HTTPS (Telegram's rule), else as a link."""
    url = ctx.play_url
    if url is None:
        return None
    if url.startswith("https://"):
        button = InlineKeyboardButton(text="▶ Play", web_app=WebAppInfo(url=url))
    else:
        button = InlineKeyboardButton(text="▶ Play (in the browser)", url=url)
    return InlineKeyboardMarkup(inline_keyboard=[[button]])


async def start(message: Message, gap: BotContext) -> None:
    text = replies.WELCOME + ("" if gap.play_url else replies.NO_URL)
    await message.answer(text, parse_mode="HTML", reply_markup=play_keyboard(gap))


async def help_(message: Message, gap: BotContext) -> None:
    await start(message, gap)


async def board(message: Message, command: CommandObject, gap: BotContext) -> None:
    window = replies.parse_window(command.args)
    text = await asyncio.to_thread(replies.leaderboard_text, gap, window)
    await message.answer(text, parse_mode="HTML", reply_markup=play_keyboard(gap))


async def me(message: Message, gap: BotContext) -> None:
    if message.from_user is None:  # channel posts have no sender
        return
    text = await asyncio.to_thread(replies.me_text, gap, message.from_user.id)
    await message.answer(text, parse_mode="HTML", reply_markup=play_keyboard(gap))


async def admin(message: Message, gap: BotContext) -> None:
    """Admins (``GAP_TELEGRAM_ADMIN_IDS``) get a button opening the dashboard inside Telegram."""
    user = message.from_user
    url = gap.play_url
    if user is None or user.id not in gap.settings.telegram_admin_ids or not url:
        return  # to everyone else the command does not exist
    button = (
        InlineKeyboardButton(text="Open the dashboard", web_app=WebAppInfo(url=url + "admin"))
        if url.startswith("https://")
        else InlineKeyboardButton(text="Open the dashboard", url=url + "admin")
    )
    await message.answer("GAP admin", reply_markup=InlineKeyboardMarkup(inline_keyboard=[[button]]))


def make_router() -> Router:
    """A fresh router with GAP's handlers (aiogram attaches a router to one dispatcher only)."""
    router = Router(name="gap")
    router.message.register(start, CommandStart())
    router.message.register(help_, Command("help"))
    router.message.register(board, Command("leaderboard", "top"))
    router.message.register(me, Command("me"))
    router.message.register(admin, Command("admin"))
    return router
