"""The API docs render in a browser that can reach nothing but the GAP server (issue 8, point 4)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from gap.config import Settings
from gap.web.app import create_app

pytestmark = [pytest.mark.browser, pytest.mark.db]


@contextmanager
def offline_page(browser: Any) -> Iterator[tuple[Any, list[str], list[str]]]:
    """A page whose every request off 127.0.0.1 is aborted (and recorded), as on a machine offline."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    blocked: list[str] = []
    errors: list[str] = []

    def route(request_route: Any) -> None:
        url = request_route.request.url
        if urlsplit(url).hostname == "127.0.0.1":
            request_route.continue_()
        else:
            blocked.append(url)
            request_route.abort("internetdisconnected")

    context.route("**/*", route)
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page, blocked, errors
    finally:
        context.close()


def test_swagger_ui_renders_the_operations_offline(
    settings: Settings, live_server: Any, browser: Any
) -> None:
    server = live_server(create_app(settings))
    with offline_page(browser) as (page, blocked, errors):
        page.goto(server.url + "/docs")
        operation = page.locator(".opblock-post .opblock-summary-path", has_text="/api/sessions").first
        operation.wait_for()
        assert page.locator(".opblock-get .opblock-summary-path", has_text="/api/leaderboard").count() == 1
        assert page.locator(".swagger-ui .info .title").first.text_content().startswith("GAP")
        assert blocked == []
        assert errors == []


def test_redoc_renders_the_operations_offline(settings: Settings, live_server: Any, browser: Any) -> None:
    server = live_server(create_app(settings))
    with offline_page(browser) as (page, blocked, errors):
        page.goto(server.url + "/redoc")
        page.locator("h1", has_text="GAP").first.wait_for()
        page.get_by_text("/api/sessions", exact=False).first.wait_for(state="attached")
        assert page.locator("[data-section-id^='operation/']").count() >= 5
        assert blocked == []
        assert errors == []


def test_docs_assets_are_vendored_with_their_licences(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        for page in ("/docs", "/redoc"):
            response = client.get(page)
            assert "cdn." not in response.text and "googleapis" not in response.text
            assert "default-src 'self'" in response.headers["content-security-policy"]
        for name in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
            response = client.get(f"/static/vendor/{name}")
            assert response.status_code == 200 and len(response.content) > 100_000
        record = client.get("/static/vendor/VENDORED.md").text
        assert "swagger-ui-dist" in record and "redoc" in record
        for licence in ("swagger-ui-dist.LICENSE", "redoc.LICENSE"):
            assert client.get(f"/static/vendor/{licence}").status_code == 200
