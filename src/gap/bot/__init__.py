"""The Telegram bot (optional ``telegram`` extra, aiogram 3): it opens the Mini App and answers
``/leaderboard`` and ``/me``. Like the web routes it is an adapter over :mod:`gap.services`.

Nothing here imports aiogram at package import time; :mod:`gap.bot.handlers` and
:mod:`gap.bot.runner` do, and the CLI turns a missing extra into a clear message.
"""

from gap.bot.context import BotContext

__all__ = ["BotContext"]
