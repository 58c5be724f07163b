"""The Telegram bot without Telegram: real aiogram ``Update`` objects fed to the real dispatcher.

A recording session stands in for the Bot API over HTTP: it keeps every method the bot calls and
answers as Telegram would, so handlers, filters and keyboards run exactly as in production.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from fixtures.game import ManualClock, seed_images
from gap.config import Settings
from gap.db.engine import make_engine, make_sessionmaker, transaction
from gap.models.base import ChatMessage, ImageInput
from gap.services.players import login_telegram
from gap.services.worker import run_pass, worker_config
from gap.web.app import create_app

aiogram = pytest.importorskip("aiogram", reason="the bot needs the telegram extra")

from aiogram import Bot  # noqa: E402
from aiogram.client.session.base import BaseSession  # noqa: E402
from aiogram.methods import SendMessage, TelegramMethod  # noqa: E402
from aiogram.types import Chat, Message, Update, User  # noqa: E402

from gap.bot.context import BotContext  # noqa: E402
from gap.bot.runner import COMMANDS, build_dispatcher, configure  # noqa: E402
from gap.cli.bot import bot as bot_command  # noqa: E402

pytestmark = pytest.mark.db

TOKEN = "123456:TEST-bot-token"
ADA = User(id=4242, is_bot=False, first_name="Ada", last_name="Lovelace")


class RecordingSession(BaseSession):
    """The Bot API, recorded: every call is kept; sendMessage echoes a message back like Telegram."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[TelegramMethod[Any]] = []
        self._ids = itertools.count(1000)

    async def make_request(self, bot: Bot, method: TelegramMethod[Any], timeout: int | None = None) -> Any:
        self.calls.append(method)
        if isinstance(method, SendMessage):
            return Message(
                message_id=next(self._ids),
                date=datetime.now(UTC),
                chat=Chat(id=int(method.chat_id), type="private"),
                text=method.text,
            )
        return True

    async def stream_content(self, *args: Any, **kwargs: Any) -> AsyncGenerator[bytes, None]:
        raise AssertionError("the bot downloads nothing")
        yield b""  # pragma: no cover

    async def close(self) -> None:
        pass

    def sent(self) -> list[SendMessage]:
        return [call for call in self.calls if isinstance(call, SendMessage)]


_update_ids = itertools.count(1)


def run_async(make: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a coroutine on a fresh event loop in its own thread: Playwright's sync API (the
    session-scoped browser of the web tests) keeps a loop running in the main thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(lambda: asyncio.run(make())).result()


def command(text: str, user: User = ADA) -> Update:
    """What Telegram delivers when ``user`` sends ``text`` in a private chat with the bot."""
    return Update(
        update_id=next(_update_ids),
        message=Message(
            message_id=next(_update_ids),
            date=datetime.now(UTC),
            chat=Chat(id=user.id, type="private"),
            from_user=user,
            text=text,
        ),
    )


def run(ctx: BotContext, *updates: Update) -> RecordingSession:
    """Feed updates through a fresh dispatcher and bot; returns what the bot sent."""
    session = RecordingSession()

    async def go() -> None:
        bot = Bot(token=TOKEN, session=session)
        dispatcher = build_dispatcher(ctx)
        for update in updates:
            await dispatcher.feed_update(bot, update)

    run_async(go)
    return session


@pytest.fixture
def ctx(settings: Settings) -> Iterator[BotContext]:
    current = settings.model_copy(
        update={"telegram_bot_token": TOKEN, "public_url": "https://gap.example.org", "session_images": 2}
    )
    engine = make_engine(current.resolved_database_url)
    yield BotContext(factory=make_sessionmaker(engine), settings=current, clock=ManualClock())
    engine.dispose()


class CannedModel:
    name = "canned"

    def answer(self, image: ImageInput, messages: list[ChatMessage], system: str | None = None) -> str:
        return "A red square."


def finish_a_session(ctx: BotContext, telegram_id: int, name: str) -> None:
    """A Telegram player (as the Mini App creates one) plays a whole session through the API."""
    with transaction(ctx.factory) as db:
        _, token = login_telegram(db, telegram_id=telegram_id, name=name, now=datetime.now(UTC))
    auth = {"Authorization": f"Bearer {token}"}
    app = create_app(ctx.settings, model=CannedModel(), clock=ctx.clock, rng=random.Random(telegram_id))
    with TestClient(app) as client:
        session = client.post("/api/sessions", headers=auth).json()
        for _ in range(10):
            state = client.get(f"/api/sessions/{session['session_id']}", headers=auth).json()
            if state["status"] == "finished":
                return
            turn = client.post(
                f"/api/rounds/{state['round']['round_id']}/questions",
                headers=auth,
                json={"question": "Colour?"},
            ).json()
            client.post(f"/api/turns/{turn['turn_id']}/verdict", headers=auth, json={"verdict": "wrong"})
    raise AssertionError("the session did not finish")


def test_start_answers_with_a_button_that_opens_the_mini_app(ctx: BotContext) -> None:
    sent = run(ctx, command("/start")).sent()
    assert len(sent) == 1
    assert sent[0].chat_id == ADA.id and "catch the AI's mistakes" in sent[0].text
    button = sent[0].reply_markup.inline_keyboard[0][0]  # type: ignore[union-attr]
    assert button.web_app is not None and button.web_app.url == "https://gap.example.org/"


def test_start_links_to_the_page_when_it_is_not_https(ctx: BotContext) -> None:
    plain = BotContext(ctx.factory, ctx.settings.model_copy(update={"public_url": "http://10.0.0.5:8000"}))
    button = run(plain, command("/start")).sent()[0].reply_markup.inline_keyboard[0][0]  # type: ignore[union-attr]
    assert button.web_app is None and button.url == "http://10.0.0.5:8000/"
    unset = BotContext(ctx.factory, ctx.settings.model_copy(update={"public_url": None}))
    reply = run(unset, command("/start")).sent()[0]
    assert reply.reply_markup is None and "GAP_PUBLIC_URL" in reply.text


def test_leaderboard_and_me(ctx: BotContext) -> None:
    seed_images(ctx.settings, per_pool=2)
    before = run(ctx, command("/leaderboard"), command("/me")).sent()
    assert "No finished sessions yet" in before[0].text
    assert "not played yet" in before[1].text

    finish_a_session(ctx, ADA.id, "Ada <Lovelace>")
    finish_a_session(ctx, 99, "Bob")
    # points reach the boards once the worker credits them (here: one session is enough)
    worker = worker_config(ctx.settings.model_copy(update={"settle_min_sessions": 1}))
    run_pass(ctx.factory, worker, ctx.clock())
    board, week, me, stranger = run(
        ctx,
        command("/leaderboard"),
        command("/leaderboard week"),
        command("/me"),
        command("/me", User(id=5, is_bot=False, first_name="Zed")),
    ).sent()
    assert board.text.startswith("<b>Leaderboard, all time</b>")
    assert "Ada &lt;Lovelace&gt;" in board.text and "Bob" in board.text  # names are escaped
    assert "this week" in week.text
    assert "<b>Ada &lt;Lovelace&gt;</b>" in me.text and "Rank: #" in me.text and "today" in me.text
    assert "not played yet" in stranger.text


def test_other_messages_are_ignored(ctx: BotContext) -> None:
    assert run(ctx, command("hello there")).sent() == []


def test_admin_command_answers_admins_only(ctx: BotContext) -> None:
    assert run(ctx, command("/admin")).sent() == []
    admins = BotContext(ctx.factory, ctx.settings.model_copy(update={"telegram_admin_ids": [ADA.id]}))
    sent = run(admins, command("/admin")).sent()
    button = sent[0].reply_markup.inline_keyboard[0][0]  # type: ignore[union-attr]
    assert button.web_app is not None and button.web_app.url == "https://gap.example.org/admin"


def test_configure_sets_commands_and_the_menu_button(ctx: BotContext) -> None:
    session = RecordingSession()

    async def go() -> None:
        await configure(Bot(token=TOKEN, session=session), ctx)

    run_async(go)
    names = [type(call).__name__ for call in session.calls]
    assert names == ["SetMyCommands", "SetChatMenuButton"]
    assert [c.command for c in session.calls[0].commands] == [c.command for c in COMMANDS]  # type: ignore[attr-defined]
    assert session.calls[1].menu_button.web_app.url == "https://gap.example.org/"  # type: ignore[attr-defined]


def test_the_command_refuses_to_start_without_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GAP_TELEGRAM_BOT_TOKEN", raising=False)
    monkeypatch.setattr("gap.cli.bot.settings", lambda: Settings(telegram_bot_token=None))
    app = typer.Typer()
    app.command()(bot_command)
    result = CliRunner().invoke(app, [])
    assert result.exit_code == 1
    assert "GAP_TELEGRAM_BOT_TOKEN" in result.output
