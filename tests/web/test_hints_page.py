"""The Hint button in a real browser (Debian's Chromium through Playwright): shown only when hints are
on, it fills the question box; the hint asked as it is is hinted, an edited one is not."""

from __future__ import annotations

import random
from typing import Any

import pytest
from sqlalchemy import select

from fixtures.game import seed_images
from fixtures.hints import HintingModel
from gap.config import Settings
from gap.db.engine import make_engine, make_sessionmaker, transaction
from gap.db.models import Turn
from gap.web.app import create_app

pytestmark = [pytest.mark.browser, pytest.mark.db]

FORBIDDEN = ("taint", "untaint", "instruct", "pool")


def open_round(browser: Any, url: str) -> tuple[Any, Any, list[str]]:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.add_init_script("localStorage.setItem('gap.onboarded', '1')")
    page.goto(url + "/")
    page.fill("#name", "Hedy")
    page.click("#login-form button")
    page.click("#start")
    page.wait_for_selector("#round:not([hidden])")
    return context, page, errors


def turns_hinted(settings: Settings) -> list[tuple[str, bool]]:
    engine = make_engine(settings.resolved_database_url)
    with transaction(make_sessionmaker(engine)) as db:
        found = [(t.question, t.hinted) for t in db.scalars(select(Turn).order_by(Turn.asked_at, Turn.index))]
    engine.dispose()
    return found


def test_the_hint_button_fills_the_question_box(settings: Settings, live_server: Any, browser: Any) -> None:
    seed_images(settings)
    model = HintingModel()
    server = live_server(
        create_app(settings.model_copy(update={"hints": True}), model=model, rng=random.Random(0))
    )
    context, page, errors = open_round(browser, server.url)
    assert page.is_visible("#hint")

    # the button fills the box with the round's hint; the player asks it as it is
    page.click("#hint")
    page.wait_for_function("document.getElementById('question').value !== ''")
    assert page.input_value("#question") == "How many cups are on the table?"
    assert page.evaluate("document.activeElement.id") == "question"
    page.click("#ask")
    page.wait_for_selector("#verdict:not([hidden])")
    page.click("#correct")
    page.wait_for_selector("#ask-form:not([hidden])")

    # the key H asks again: the same hint (one per picture); edited, it is the player's own question
    page.keyboard.press("h")
    page.wait_for_function("document.getElementById('question').value !== ''")
    assert page.input_value("#question") == "How many cups are on the table?"
    page.fill("#question", "How many cups are under the table?")
    page.click("#ask")
    page.wait_for_selector("#verdict:not([hidden])")
    assert turns_hinted(settings) == [
        ("How many cups are on the table?", True),
        ("How many cups are under the table?", False),
    ]
    assert len(model.hint_calls()) == 1
    sources = "\n".join(
        page.request.get(server.url + path).text() for path in ("/", "/static/game.js", "/static/game.css")
    ).lower()
    assert not [word for word in FORBIDDEN if word in sources]
    assert errors == []
    context.close()


def test_no_hint_button_when_hints_are_off(settings: Settings, live_server: Any, browser: Any) -> None:
    seed_images(settings)
    model = HintingModel()
    server = live_server(create_app(settings, model=model, rng=random.Random(0)))
    context, page, errors = open_round(browser, server.url)
    assert page.locator("#hint").count() == 0
    page.keyboard.press("h")  # the key does nothing either
    page.fill("#question", "Is it red?")
    page.click("#ask")
    page.wait_for_selector("#verdict:not([hidden])")
    assert model.hint_calls() == [] and errors == []
    context.close()
