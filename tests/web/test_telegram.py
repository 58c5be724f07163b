"""Telegram Mini App login: Telegram's signed initData, checked by the server and used by the page.

initData is signed here with a test bot token, following Telegram's published recipe, written out
independently of :mod:`gap.services.telegram` so that a mistake there cannot hide in both.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from fastapi.testclient import TestClient

from fixtures.game import ManualClock, seed_images
from gap.config import Settings
from gap.errors import AuthError
from gap.services.telegram import validate_init_data
from gap.web.app import create_app

BOT_TOKEN = "123456:TEST-bot-token"
USER = {"id": 4242, "first_name": "Ada", "last_name": "Lovelace", "username": "ada", "language_code": "en"}
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def signed_init_data(
    *, token: str = BOT_TOKEN, auth_date: datetime = NOW, user: dict[str, Any] | None = None, **extra: str
) -> str:
    """initData as Telegram builds it: fields, plus the hex HMAC of their sorted key=value lines."""
    fields = {
        "query_id": "AAHdF6IQAAAAAN0XohDhrOrc",
        "user": json.dumps(user or USER, separators=(",", ":")),
        "auth_date": str(int(auth_date.timestamp())),
        **extra,
    }
    check = "\n".join(f"{key}={fields[key]}" for key in sorted(fields))
    secret = hmac.new(b"WebAppData", token.encode(), hashlib.sha256).digest()
    fields["hash"] = hmac.new(secret, check.encode(), hashlib.sha256).hexdigest()
    return urlencode(fields)


def tampered(init_data: str) -> str:
    """The same signature over a different user: someone trying to log in as user 1."""
    changed = init_data.replace(quote('"id":4242'), quote('"id":1'))
    assert changed != init_data
    return changed


def unsigned(init_data: str) -> str:
    return "&".join(part for part in init_data.split("&") if not part.startswith("hash="))


def validate(init_data: str, *, max_age_s: float = 86400, now: datetime = NOW) -> Any:
    return validate_init_data(init_data, bot_token=BOT_TOKEN, max_age_s=max_age_s, now=now)


# --- the check itself ----------------------------------------------------------------------


def test_valid_init_data_names_the_user() -> None:
    user = validate(signed_init_data(signature="abc", chat_type="private"))
    assert (user.id, user.display_name, user.username) == (4242, "Ada Lovelace", "ada")
    assert (
        validate(signed_init_data(user={"id": 7, "first_name": "", "username": "zed"})).display_name == "zed"
    )


BAD_INIT_DATA: dict[str, Callable[[], str]] = {
    "tampered": lambda: tampered(signed_init_data()),
    "unsigned": lambda: unsigned(signed_init_data()),
    "other bot": lambda: signed_init_data(token="999:OTHER"),
    "stale": lambda: signed_init_data(auth_date=NOW - timedelta(days=1, seconds=1)),
    "future": lambda: signed_init_data(auth_date=NOW + timedelta(hours=1)),
    "no user": lambda: signed_init_data(user={"first_name": "Nobody"}),
    "repeated field": lambda: signed_init_data() + "&auth_date=1",
    "not a query": lambda: "just some text",
    "empty": lambda: "",
    "bad hash": lambda: unsigned(signed_init_data()) + "&hash=" + "0" * 64,
}


@pytest.mark.parametrize("case", BAD_INIT_DATA)
def test_bad_init_data_is_refused(case: str) -> None:
    with pytest.raises(AuthError):
        validate(BAD_INIT_DATA[case]())


def test_the_age_limit_is_configurable() -> None:
    an_hour_ago = signed_init_data(auth_date=NOW - timedelta(hours=1))
    assert validate(an_hour_ago).id == 4242
    with pytest.raises(AuthError, match="expired"):
        validate(an_hour_ago, max_age_s=600)


def test_no_bot_token_means_no_telegram_login() -> None:
    with pytest.raises(AuthError, match="not enabled"):
        validate_init_data(signed_init_data(), bot_token="", max_age_s=86400, now=NOW)


# --- the endpoint --------------------------------------------------------------------------


def no_model() -> Any:
    raise AssertionError("logging in must not need the model")


@pytest.fixture
def tg_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"telegram_bot_token": BOT_TOKEN, "telegram_auth_max_age": 3600})


@pytest.mark.db
def test_endpoint_logs_in_and_links_the_telegram_user(tg_settings: Settings) -> None:
    clock = ManualClock(NOW)
    with TestClient(create_app(tg_settings, model=no_model, clock=clock)) as client:
        first = client.post("/api/auth/telegram", json={"init_data": signed_init_data()})
        assert first.status_code == 200, first.text
        me = client.get("/api/me", headers={"Authorization": f"Bearer {first.json()['token']}"})
        assert me.json()["name"] == "Ada Lovelace"
        clock.advance(60)
        again = client.post("/api/auth/telegram", json={"init_data": signed_init_data(auth_date=clock.now)})
        assert again.json()["player_id"] == first.json()["player_id"]  # same player, fresh token
        guest = client.post("/api/auth/guest", json={"name": "Ada Lovelace"}).json()
        assert guest["player_id"] != first.json()["player_id"]


@pytest.mark.db
@pytest.mark.parametrize("case", ["tampered", "unsigned", "stale", "other bot"])
def test_endpoint_refuses_bad_init_data_with_401(tg_settings: Settings, case: str) -> None:
    with TestClient(create_app(tg_settings, model=no_model, clock=ManualClock(NOW))) as client:
        response = client.post("/api/auth/telegram", json={"init_data": BAD_INIT_DATA[case]()})
    assert response.status_code == 401
    assert response.json()["detail"]


@pytest.mark.db
def test_endpoint_uses_the_configured_age_limit(tg_settings: Settings) -> None:
    two_hours_old = signed_init_data(auth_date=NOW - timedelta(hours=2))
    with TestClient(create_app(tg_settings, model=no_model, clock=ManualClock(NOW))) as client:
        assert client.post("/api/auth/telegram", json={"init_data": two_hours_old}).status_code == 401
    longer = tg_settings.model_copy(update={"telegram_auth_max_age": 86400})
    with TestClient(create_app(longer, model=no_model, clock=ManualClock(NOW))) as client:
        assert client.post("/api/auth/telegram", json={"init_data": two_hours_old}).status_code == 200


@pytest.mark.db
def test_endpoint_without_a_bot_token_refuses(settings: Settings) -> None:
    with TestClient(create_app(settings, model=no_model, clock=ManualClock(NOW))) as client:
        response = client.post("/api/auth/telegram", json={"init_data": signed_init_data()})
    assert response.status_code == 401 and "not enabled" in response.json()["detail"]


# --- the page inside a (simulated) Telegram ------------------------------------------------

THEME = {
    "bg_color": "#17212b",
    "text_color": "#f5f5f5",
    "button_color": "#5288c1",
    "button_text_color": "#ffffff",
}

# A stand-in for telegram-web-app.js that records what the page asks of Telegram.
FAKE_WEBAPP = """
(() => {
  const calls = [];
  const handlers = {};
  const button = (name) => ({
    text: "", isVisible: false, _click: null,
    setText(t) { this.text = t; calls.push(name + ".setText:" + t); return this; },
    show() { this.isVisible = true; return this; },
    hide() { this.isVisible = false; return this; },
    onClick(f) { this._click = f; return this; },
  });
  window.Telegram = { WebApp: {
    initData: %(init_data)s, colorScheme: "dark", themeParams: %(theme)s, version: "8.0",
    MainButton: button("MainButton"), BackButton: button("BackButton"),
    HapticFeedback: {
      impactOccurred: (s) => calls.push("impact:" + s),
      notificationOccurred: (s) => calls.push("notify:" + s),
    },
    ready: () => calls.push("ready"), expand: () => calls.push("expand"),
    isVersionAtLeast: () => true, disableVerticalSwipes: () => calls.push("disableVerticalSwipes"),
    onEvent: (name, f) => { handlers[name] = f; },
    _calls: calls, _handlers: handlers,
  } };
})();
"""


def fake_telegram(init_data: str) -> str:
    return FAKE_WEBAPP % {"init_data": json.dumps(init_data), "theme": json.dumps(THEME)}


@pytest.fixture
def tg_server(tg_settings: Settings, live_server: Any) -> Any:
    seed_images(tg_settings, per_pool=2)
    app = create_app(tg_settings, model=no_model, clock=ManualClock(datetime.now(UTC)), rng=random.Random(0))
    return live_server(app)


def open_in_telegram(browser: Any, url: str, script: str | None) -> tuple[Any, Any, list[int]]:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    statuses: list[int] = []
    page.on("response", lambda r: statuses.append(r.status) if r.url.endswith("/api/auth/telegram") else None)
    page.add_init_script("localStorage.setItem('gap.onboarded', '1')")
    if script:
        page.add_init_script(script)
    page.goto(url)
    return context, page, statuses


@pytest.mark.db
@pytest.mark.browser
def test_page_logs_in_inside_telegram(tg_server: Any, browser: Any) -> None:
    context, page, statuses = open_in_telegram(
        browser, tg_server.url + "/", fake_telegram(signed_init_data(auth_date=datetime.now(UTC)))
    )
    page.wait_for_selector("#lobby:not([hidden])")
    assert statuses == [200]
    assert page.text_content("#hello") == "Hi Ada Lovelace!"
    assert page.is_hidden("#login")
    calls = page.evaluate("Telegram.WebApp._calls")
    assert {"ready", "expand", "disableVerticalSwipes"} <= set(calls)
    # Telegram's theme colours and its main button, instead of the page's own start button
    assert (
        page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--bg').trim()")
        == "#17212b"
    )
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    assert page.evaluate("Telegram.WebApp.MainButton.text") == "START A SESSION"
    assert page.evaluate("Telegram.WebApp.MainButton.isVisible") is True
    assert page.is_hidden("#start")
    page.evaluate("Telegram.WebApp.MainButton._click()")
    page.wait_for_selector("#round:not([hidden])")
    assert page.evaluate("Telegram.WebApp.MainButton.isVisible") is False
    # a theme change in Telegram is followed live
    page.evaluate(
        "Telegram.WebApp.themeParams = {bg_color: '#ffffff'}; Telegram.WebApp.colorScheme = 'light';"
        "Telegram.WebApp._handlers.themeChanged()"
    )
    assert page.evaluate("document.documentElement.dataset.theme") == "light"
    context.close()


@pytest.mark.db
@pytest.mark.browser
@pytest.mark.parametrize("case", ["tampered", "stale", "unsigned"])
def test_page_says_when_telegram_login_fails(tg_server: Any, browser: Any, case: str) -> None:
    fresh = signed_init_data(auth_date=datetime.now(UTC))
    init_data = {
        "tampered": tampered(fresh),
        "stale": signed_init_data(auth_date=datetime.now(UTC) - timedelta(days=2)),
        "unsigned": unsigned(fresh),
    }[case]
    context, page, statuses = open_in_telegram(browser, tg_server.url + "/", fake_telegram(init_data))
    page.wait_for_selector("#tg-status:not([hidden])")
    assert statuses == [401]
    assert "Telegram sign-in failed" in page.text_content("#tg-status")
    assert page.is_visible("#login-form")  # guest play is still possible
    assert page.evaluate("localStorage.getItem('gap.token')") is None
    context.close()


@pytest.mark.db
@pytest.mark.browser
def test_page_loads_the_vendored_telegram_script_inside_telegram(tg_server: Any, browser: Any) -> None:
    """Real telegram-web-app.js, served by the app, reading initData from the URL as Telegram passes it."""
    init_data = signed_init_data(auth_date=datetime.now(UTC))
    fragment = urlencode(
        {
            "tgWebAppData": init_data,
            "tgWebAppVersion": "8.0",
            "tgWebAppPlatform": "web",
            "tgWebAppThemeParams": json.dumps(THEME),
        },
        quote_via=quote,
    )
    context, page, statuses = open_in_telegram(browser, f"{tg_server.url}/#{fragment}", None)
    page.wait_for_selector("#lobby:not([hidden])")
    assert statuses == [200]
    assert page.evaluate("Telegram.WebApp.initData") == init_data
    assert page.text_content("#hello") == "Hi Ada Lovelace!"
    context.close()


@pytest.mark.db
@pytest.mark.browser
def test_outside_telegram_the_page_offers_guest_play(tg_server: Any, browser: Any) -> None:
    context, page, statuses = open_in_telegram(browser, tg_server.url + "/", None)
    page.wait_for_selector("#login:not([hidden])")
    assert statuses == []
    assert page.evaluate("typeof window.Telegram") == "undefined"  # the script was not even loaded
    context.close()
