"""The bot's answers as plain data: queries through the services, texts built here, no aiogram.

Kept apart from the handlers so the wording and the numbers can be checked without Telegram, and
so that blocking database calls run in a worker thread (see :mod:`gap.bot.handlers`).
"""

from __future__ import annotations

from html import escape

from gap.bot.context import BotContext
from gap.db.engine import reading
from gap.services.leaderboard import Window, leaderboard, rank_of
from gap.services.players import credited_points
from gap.services.telegram import find_telegram_player

WINDOW_TITLES = {Window.ALL: "all time", Window.WEEK: "this week", Window.DAY: "today"}
BOARD_SIZE = 10

WELCOME = (
    "<b>GAP: catch the AI's mistakes</b>\n\n"
    "Ask an AI about pictures and judge its answers. You score when you catch a real mistake; "
    "your questions help make AI models better.\n\n"
    "/leaderboard: the best players (add <code>week</code> or <code>day</code>)\n"
    "/me: your points and rank"
)
NO_URL = "\n\n(The game's address is not configured on this server yet: set GAP_PUBLIC_URL.)"


def parse_window(argument: str | None) -> Window:
    words = {
        "all": Window.ALL,
        "week": Window.WEEK,
        "weekly": Window.WEEK,
        "day": Window.DAY,
        "today": Window.DAY,
    }
    return words.get((argument or "all").strip().lower(), Window.ALL)


def leaderboard_text(ctx: BotContext, window: Window) -> str:
    with reading(ctx.factory) as db:
        rows = leaderboard(db, window=window, limit=BOARD_SIZE, now=ctx.clock())
    title = f"<b>Leaderboard, {WINDOW_TITLES[window]}</b>"
    if not rows:
        return f"{title}\n\nNo finished sessions yet. Be the first!"
    lines = [f"{r.rank}. {escape(r.name)}: {r.points:g}" for r in rows]
    return title + "\n\n" + "\n".join(lines)


def me_text(ctx: BotContext, telegram_id: int) -> str:
    now = ctx.clock()
    with reading(ctx.factory) as db:
        player = find_telegram_player(db, telegram_id)
        if player is None:
            return "You have not played yet. Tap <b>Play</b> to start!"
        points = credited_points(db, player.id)
        ranks = {w: rank_of(db, player_id=player.id, window=w, now=now) for w in Window}
    placed = [f"#{rank} {WINDOW_TITLES[w]}" for w, rank in ranks.items() if rank is not None]
    standing = ", ".join(placed) if placed else "no finished session yet"
    return f"<b>{escape(player.name)}</b>\nPoints: {points:g}\nRank: {standing}"
