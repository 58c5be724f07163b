"""A real browser plays on the page served by a real server."""

from __future__ import annotations

import random
from typing import Any

import pytest

from fixtures.game import seed_images
from gap.config import Settings
from gap.models.base import VisionChatModel
from gap.web.app import create_app

pytestmark = [pytest.mark.browser, pytest.mark.db]


def test_a_round_is_played_in_the_browser(
    settings: Settings, tiny_model: VisionChatModel, live_server: Any, browser: Any
) -> None:
    seed_images(settings)
    server = live_server(
        create_app(settings.model_copy(update={"session_images": 2}), model=tiny_model, rng=random.Random(0))
    )
    page = browser.new_page(viewport={"width": 390, "height": 844})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url + "/")
    page.fill("#name", "Grace")
    page.click("#login-form button")
    page.click("#start")
    page.wait_for_selector("#round:not([hidden])")
    assert page.text_content("#progress") == "1/2"
    assert page.evaluate("document.getElementById('image').naturalWidth") > 0
    page.fill("#question", "What colour is the square?")
    page.click("#ask")
    page.wait_for_selector("#chat li.a")
    assert page.text_content("#chat li.q") == "What colour is the square?"
    assert page.text_content("#chat li.a").strip()
    page.click("#correct")
    page.wait_for_selector("#ask-form:not([hidden])")
    page.fill("#question", "How many squares?")
    page.click("#ask")
    page.wait_for_selector("#verdict:not([hidden])")
    page.click("#wrong")
    page.fill("#correction", "Two.")
    page.click("#correction-form button")
    page.wait_for_function("document.getElementById('progress').textContent === '2/2'")
    page.fill("#question", "Is it dark?")
    page.click("#ask")
    page.wait_for_selector("#verdict:not([hidden])")
    page.click("#wrong")
    page.click("#correction-form button")
    page.wait_for_selector("#end:not([hidden])")
    points = float(page.text_content("#session-points"))
    assert points >= 0
    page.wait_for_function("document.querySelectorAll('#leaders li').length === 1")
    assert "Grace" in page.text_content("#leaders")
    assert errors == []
    page.close()
