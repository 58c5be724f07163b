"""A real browser (Debian's Chromium through Playwright) plays on the page served by a real server.

The server's clock is a :class:`ManualClock` and the page's clock is Playwright's, so a round can be
run out in milliseconds. Screenshots for the docs are written to ``docs/screenshots/`` when
``GAP_UPDATE_SCREENSHOTS=1``, else to the test's temporary folder.
"""

from __future__ import annotations

import io
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage

from fixtures.game import ManualClock, seed_images
from gap.config import Settings
from gap.db.engine import make_engine, make_sessionmaker, transaction
from gap.errors import ModelTimeout
from gap.game import Pool
from gap.models.base import ChatMessage, ImageInput, VisionChatModel
from gap.services.images import add_image
from gap.services.quality import SettlePolicy
from gap.services.worker import run_pass, worker_config
from gap.storage import LocalStore
from gap.web.app import create_app

pytestmark = [pytest.mark.browser, pytest.mark.db]

ROOT = Path(__file__).resolve().parents[2]
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
FORBIDDEN = ("taint", "untaint", "instruct", "pool")
ADMIN_TOKEN = "phone-admin-token"


def screenshot_dir(tmp_path: Path) -> Path:
    if os.environ.get("GAP_UPDATE_SCREENSHOTS") == "1":
        return ROOT / "docs" / "screenshots"
    return tmp_path / "screenshots"


def save_screenshot(page: Any, path: Path, *, full_page: bool = False) -> None:
    """A palette PNG: a quarter of the size of the raw screenshot, fine for docs."""
    raw = PILImage.open(io.BytesIO(page.screenshot(full_page=full_page))).convert("RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    raw.quantize(colors=128, method=PILImage.Quantize.MEDIANCUT).save(path, optimize=True)


@dataclass
class FlakyModel:
    """The real tiny model, failing on request: what a slow or crashed model server looks like."""

    inner: VisionChatModel
    failures: list[Exception] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.inner.name

    def answer(self, image: ImageInput, messages: list[ChatMessage], system: str | None = None) -> str:
        if self.failures:
            raise self.failures.pop(0)
        return self.inner.answer(image, messages, system=system)


def settle(settings: Settings, clock: ManualClock) -> None:
    """One worker pass, as `gap worker --once` runs it, crediting even a single finished session."""
    engine = make_engine(settings.resolved_database_url)
    config = worker_config(settings)
    run_pass(make_sessionmaker(engine), replace(config, policy=SettlePolicy(min_sessions=1)), clock())
    engine.dispose()


def seconds_shown(page: Any) -> int:
    minutes, seconds = page.text_content("#countdown").split(":")
    return int(minutes) * 60 + int(seconds)


@contextmanager
def phone_page(browser: Any, **options: Any) -> Iterator[tuple[Any, list[str]]]:
    context = browser.new_context(**{**PHONE, **options})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page, errors
    finally:
        context.close()


# Records, at the moment the page changes picture or shows a toast (before any frame is painted),
# what the time bar and the countdown say, and how tall the toast is.
FRAME_PROBE = """
window.__frames = []; window.__toasts = [];
document.addEventListener('DOMContentLoaded', () => {
  const bar = () => document.querySelector('#timebar span');
  new MutationObserver(() => {
    const [m, s] = document.getElementById('countdown').textContent.split(':');
    window.__frames.push({
      progress: document.getElementById('progress').textContent,
      bar: parseFloat(getComputedStyle(bar()).width) / document.getElementById('timebar').clientWidth,
      seconds: Number(m) * 60 + Number(s),
    });
  }).observe(document.getElementById('progress'), {childList: true, characterData: true, subtree: true});
  const toast = document.getElementById('toast');
  new MutationObserver(() => {
    if (toast.hidden) return;
    window.__toasts.push({text: toast.textContent, height: toast.getBoundingClientRect().height,
                          line: parseFloat(getComputedStyle(toast).lineHeight)});
  }).observe(toast, {childList: true, attributes: true, subtree: true});
});
"""


# The page is not scrolled; the picture sits below the header; the last answer is whole inside the
# chat and above the controls, which are on screen.
ROUND_IN_VIEW = """(controls) => {
  const rect = (node) => node.getBoundingClientRect().toJSON();
  const box = {scroll: window.scrollY, height: innerHeight, header: rect(document.querySelector('.bar')),
               image: rect(document.getElementById('image')), chat: rect(document.getElementById('chat')),
               answer: rect(document.querySelector('#chat li.a:last-child')),
               controls: rect(document.querySelector(controls))};
  const a = box.answer;
  box.ok = box.scroll === 0 && box.image.top >= box.header.bottom - 0.5 && box.image.height >= 80
    && a.top >= box.chat.top - 0.5 && a.bottom <= box.chat.bottom + 0.5 && a.bottom <= box.controls.top
    && box.controls.bottom <= box.height + 0.5;
  return box;
}"""


def assert_round_in_view(page: Any, controls: str) -> None:
    """Waited for, since a resize lays the page out again only at the next frame."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    with suppress(PlaywrightTimeout):  # on a timeout, the assertion below shows where everything was
        page.wait_for_function(f"(controls) => ({ROUND_IN_VIEW})(controls).ok", arg=controls)
    box = page.evaluate(ROUND_IN_VIEW, controls)
    assert box["ok"], box


def assert_picture_fits(page: Any) -> None:
    """The picture of a new round, once loaded, is as wide as the page (or 40% of the screen's height
    tall, if that comes first) at its own aspect ratio: no grey bars."""
    page.wait_for_function(
        "(img => img.complete && img.naturalWidth > 0"
        " && img.parentElement.style.getPropertyValue('--ratio') !== '')(document.getElementById('image'))"
    )
    pic = page.evaluate(
        "(img => ({w: img.clientWidth, h: img.clientHeight, nw: img.naturalWidth, nh: img.naturalHeight,"
        " page: document.getElementById('round').clientWidth, screen: innerHeight}))"
        "(document.getElementById('image'))"
    )
    ratio = pic["nw"] / pic["nh"]
    assert abs(pic["w"] - min(pic["page"], 0.4 * pic["screen"] * ratio)) <= 1, pic
    assert abs(pic["h"] - pic["w"] / ratio) <= 1, pic


def play_page_sources(page: Any, url: str) -> str:
    """The HTML, JS and CSS a player downloads, lower-cased."""
    return "\n".join(
        page.request.get(url + path).text() for path in ("/", "/static/game.js", "/static/game.css")
    ).lower()


def test_a_whole_session_is_played_in_the_browser(
    settings: Settings, tiny_model: VisionChatModel, live_server: Any, browser: Any, tmp_path: Path
) -> None:
    seed_images(settings)
    clock = ManualClock()
    server = live_server(
        create_app(
            settings.model_copy(update={"session_images": 3}),
            model=tiny_model,
            clock=clock,
            rng=random.Random(0),
        )
    )
    shots = screenshot_dir(tmp_path)
    with phone_page(browser) as (page, errors):
        page.clock.install()
        page.add_init_script(FRAME_PROBE)
        page.goto(server.url + "/")
        # first visit: the how-to-play sheet, once
        page.wait_for_selector("#help:not([hidden])")
        page.click("#help-ok")
        assert page.is_hidden("#help")

        page.fill("#name", "Grace")
        page.click("#login-form button")
        page.wait_for_selector("#lobby:not([hidden])")
        assert page.text_content("#hello") == "Hi Grace!"
        page.click("#start")
        page.wait_for_selector("#round:not([hidden])")
        assert page.text_content("#progress") == "1/3"
        assert_picture_fits(page)

        # ask, see the answer, mark it Correct
        page.fill("#question", "What colour is the square?")
        page.click("#ask")
        page.wait_for_selector("#verdict:not([hidden])")
        assert page.text_content("#chat li.q") == "What colour is the square?"
        assert page.text_content("#chat li.a").strip()
        assert page.input_value("#question") == ""

        # the countdown moves with the page's clock, from the server's deadline; the page's clock is
        # paused meanwhile, so a slow machine cannot slip real seconds between the two readings
        page.clock.pause_at(page.evaluate("Date.now()") / 1000 + 1)  # seconds, for Python
        before = seconds_shown(page)
        assert 105 <= before <= 120
        page.clock.run_for(10_000)
        assert before - 11 <= seconds_shown(page) <= before - 9
        page.clock.resume()
        page.click("#correct")
        page.wait_for_selector("#ask-form:not([hidden])")
        assert page.get_attribute("#chat li.a", "class") == "a correct"

        # a second question, marked Wrong with the right answer: the next picture comes
        page.fill("#question", "How many squares?")
        page.click("#ask")
        page.wait_for_selector("#verdict:not([hidden])")
        page.click("#wrong")
        page.fill("#correction", "Two.")
        page.click("#send-correction")
        page.wait_for_function("document.getElementById('progress').textContent === '2/3'")
        assert page.locator("#chat li").count() == 0

        # picture 2 runs out of time: the server's clock passes the deadline, the page's follows
        clock.advance(121)
        page.clock.run_for(121_000)
        page.wait_for_function("document.getElementById('progress').textContent === '3/3'")
        # at the first frame of every picture, the bar and the countdown show the same time left
        frames = page.evaluate("window.__frames")
        # picture 3 starts with its full time (read when it appeared, so a slow machine adds nothing)
        assert next(f for f in frames if f["progress"] == "3/3")["seconds"] >= 115
        assert sorted({f["progress"] for f in frames}) == ["1/3", "2/3", "3/3"]
        for frame in frames:
            assert abs(frame["bar"] - frame["seconds"] / 120) <= 1.5 / 120, frame
        # the toast says so on one line at 390 px
        toasts = page.evaluate("window.__toasts")
        timeout_toast = next(t for t in toasts if t["text"] == "Time's up! Picture 3 of 3")
        assert timeout_toast["height"] < 2 * timeout_toast["line"]  # one line and its padding

        # picture 3 expires on the server while the player types: a readable error, then the end
        page.fill("#question", "Is it dark?")
        clock.advance(121)
        page.click("#ask")
        page.wait_for_selector("#end:not([hidden])")
        assert "over" in page.text_content("#error-text").lower()
        # what the player did, and the total with what is credited; no points of this session alone
        summary = "You asked 2 questions, caught 1 mistake and gave 1 correction."
        assert page.text_content("#end-summary") == summary
        page.wait_for_function("document.getElementById('end-points').textContent !== ''")
        assert page.text_content("#end-points") == "Your total: 20 points, 0 credited so far."
        assert page.is_visible("#leaders-empty")  # nothing is credited before settlement

        # settlement credits the session; a new visit skips the how-to and goes to the lobby
        settle(settings, clock)
        page.reload()
        page.wait_for_selector("#lobby:not([hidden])")
        assert page.is_hidden("#help")
        credited = page.text_content("#my-points")
        assert credited.endswith(" points") and "credited so far" not in credited
        page.wait_for_function("document.getElementById('my-rank').textContent.includes('#1')")
        page.wait_for_function("document.querySelectorAll('#leaders li').length === 1")
        assert "Grace" in page.text_content("#leaders")
        page.click("#board [data-window='day']")
        page.wait_for_function(
            "document.querySelector('#board [aria-selected=true]').dataset.window === 'day'"
        )
        page.wait_for_function("document.querySelectorAll('#leaders li').length === 1")
        assert "Grace" in page.text_content("#leaders")
        save_screenshot(page, shots / "lobby.png")

        sources = play_page_sources(page, server.url)
        assert not [word for word in FORBIDDEN if word in sources]
        assert errors == []


def test_slow_model_and_lost_network_keep_the_question(
    settings: Settings, tiny_model: VisionChatModel, live_server: Any, browser: Any
) -> None:
    seed_images(settings)
    model = FlakyModel(tiny_model, [ModelTimeout("took longer than 60 s")])
    server = live_server(create_app(settings, model=model, rng=random.Random(1)))
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.add_init_script("localStorage.setItem('gap.onboarded', '1')")
    page.goto(server.url + "/")
    page.fill("#name", "Linus")
    page.press("#name", "Enter")
    page.wait_for_selector("#lobby:not([hidden])")
    page.keyboard.press("Enter")  # desktop: Enter starts the session
    page.wait_for_selector("#round:not([hidden])")

    # the model is slow: a readable message, the question stays, Retry gets the answer
    page.keyboard.press("/")
    page.keyboard.type("Is there a cat?")
    page.keyboard.press("Enter")
    page.wait_for_selector("#error:not([hidden])")
    assert "taking too long" in page.text_content("#error-text")
    assert page.input_value("#question") == "Is there a cat?"
    page.click("#retry")
    page.wait_for_selector("#verdict:not([hidden])")
    assert page.is_hidden("#error")

    # keys: C marks Correct
    page.keyboard.press("c")
    page.wait_for_selector("#ask-form:not([hidden])")

    # the network drops: the question stays typed, Retry sends it once the network is back
    context.set_offline(True)
    page.fill("#question", "What is on the left?")
    page.click("#ask")
    page.wait_for_selector("#error:not([hidden])")
    assert (
        "offline" in page.text_content("#error-text").lower()
        or "network" in page.text_content("#error-text").lower()
    )
    page.wait_for_selector("#offline:not([hidden])")
    assert page.input_value("#question") == "What is on the left?"
    context.set_offline(False)
    page.click("#retry")
    page.wait_for_selector("#verdict:not([hidden])")
    assert page.locator("#chat li.q").last.text_content() == "What is on the left?"

    # keys: W opens the correction, Escape goes back, W again and Enter sends it
    page.keyboard.press("w")
    page.wait_for_selector("#correction-form:not([hidden])")
    assert page.evaluate("document.activeElement.id") == "correction"
    # A key pressed right after Escape is a shortcut, not typing into the hidden box: Chromium
    # moves the focus out of a hidden box only a task later, and a busy machine (or a fast player)
    # gets the next key in first. Escape dispatched from the page, then W at once, is that case.
    page.evaluate(
        "document.activeElement.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape', bubbles: true}))"
    )
    page.keyboard.press("w")
    page.wait_for_selector("#correction-form:not([hidden])")
    page.keyboard.press("Escape")
    page.wait_for_selector("#verdict:not([hidden])")
    assert page.evaluate("document.activeElement.id") == "wrong"  # back where the player was
    page.keyboard.press("w")
    page.wait_for_selector("#correction-form:not([hidden])")
    page.keyboard.type("A dog.")
    page.keyboard.press("Enter")
    page.wait_for_function("document.getElementById('progress').textContent === '2/10'")
    # the next picture: the focus left the hidden form, so / goes to the question box at once
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "question"

    # a question over the limit is refused with a message, never cut; near the limit, a counter
    page.keyboard.type("x" * 399)
    assert page.is_hidden("#question-count")
    page.keyboard.type("x")
    assert page.text_content("#question-count") == "400/500"
    page.fill("#question", "y" * 501)
    assert page.text_content("#question-count") == "Too long: 501/500 characters. Please shorten it."
    assert page.is_disabled("#ask")
    page.press("#question", "Enter")
    assert page.input_value("#question") == "y" * 501 and page.locator("#chat li").count() == 0
    page.press("#question", "Backspace")
    assert page.text_content("#question-count") == "500/500" and page.is_enabled("#ask")
    page.fill("#question", "")

    # a reload (or a crashed tab) resumes the session where it was
    page.reload()
    page.wait_for_selector("#round:not([hidden])")
    assert page.text_content("#progress") == "2/10"

    # the picture opens zoomed with Z and closes with Escape
    page.keyboard.press("z")
    page.wait_for_selector("#zoom:not([hidden])")
    page.mouse.wheel(0, -300)  # returns before the page has handled it: wait for the zoom
    page.wait_for_function("!document.getElementById('zoom-img').style.transform.includes('scale(1)')")
    page.keyboard.press("Escape")
    page.wait_for_selector("#zoom", state="hidden")
    assert errors == []
    context.close()


# --- screenshots for the docs: scripted answers that read like a real model's --------------


@dataclass
class ScriptedModel:
    """Answers from a script, so the docs show a readable conversation (the tiny model's is noise)."""

    answers: list[str]
    calls: int = 0

    @property
    def name(self) -> str:
        return "scripted"

    def answer(self, image: ImageInput, messages: list[ChatMessage], system: str | None = None) -> str:
        self.calls += 1
        return self.answers[(self.calls - 1) % len(self.answers)]


def _photos(settings: Settings) -> None:
    """Two demo photos when scikit-image is installed (nicer screenshots), else generated squares."""
    try:
        import skimage
    except ImportError:  # the demo extra is optional
        seed_images(settings)
        return
    folder = Path(skimage.__file__).parent / "data"
    engine = make_engine(settings.resolved_database_url)
    for name, pool in (("coffee.png", Pool.TAINTED), ("chelsea.png", Pool.UNTAINTED)):
        with transaction(make_sessionmaker(engine)) as db:
            add_image(
                db,
                images=LocalStore(settings.images_dir),
                data=(folder / name).read_bytes(),
                original_name=name,
                pool=pool,
                now=datetime.now(UTC),
            )
    engine.dispose()


def test_screenshots_of_the_phone_page(
    settings: Settings, live_server: Any, browser: Any, tmp_path: Path
) -> None:
    _photos(settings)
    model = ScriptedModel(
        [
            "There is one cup of coffee on a saucer, with a spoon beside it.",
            "The cup is blue, with a white rim.",
            "No, there is no animal in this picture.",
        ]
    )
    server = live_server(
        create_app(
            settings.model_copy(update={"session_images": 2, "admin_token": ADMIN_TOKEN}),
            model=model,
            rng=random.Random(1),
        )
    )
    shots = screenshot_dir(tmp_path)
    with phone_page(browser, color_scheme="light") as (page, errors):
        page.goto(server.url + "/")
        page.wait_for_selector("#help:not([hidden])")
        save_screenshot(page, shots / "onboarding.png")
        page.click("#help-ok")
        page.fill("#name", "Ada")
        page.click("#login-form button")
        page.click("#start")
        page.wait_for_selector("#round:not([hidden])")
        for question in ("How many cups are there?", "What colour is the cup?"):
            page.fill("#question", question)
            page.click("#ask")
            page.wait_for_selector("#verdict:not([hidden])")
            if question.startswith("How many"):
                page.click("#correct")
                page.wait_for_selector("#ask-form:not([hidden])")
        page.evaluate("document.getElementById('image').decode()")
        assert_picture_fits(page)
        assert_round_in_view(page, "#verdict")
        save_screenshot(page, shots / "play-light.png")
        page.click("#theme-btn")  # the manual switch wins over the system's scheme
        assert page.evaluate("document.documentElement.dataset.theme") == "dark"
        save_screenshot(page, shots / "play-dark.png")
        page.click("#wrong")
        page.fill("#correction", "It is red outside and white inside.")
        # while typing the correction, the picture and the answer being judged stay in view, also
        # with the soft keyboard taking half of the screen
        assert_round_in_view(page, "#correction-form")
        save_screenshot(page, shots / "correction.png")
        page.set_viewport_size({"width": 390, "height": 460})
        assert_round_in_view(page, "#correction-form")
        page.set_viewport_size(PHONE["viewport"])
        page.click("#send-correction")
        page.wait_for_function("document.getElementById('progress').textContent === '2/2'")
        page.fill("#question", "Is there a cat in the picture?")
        page.click("#ask")
        page.wait_for_selector("#verdict:not([hidden])")
        page.click("#wrong")
        page.click("#skip-correction")
        page.wait_for_selector("#end:not([hidden])")
        page.wait_for_function("document.getElementById('end-points').textContent !== ''")
        page.click("#theme-btn")
        save_screenshot(page, shots / "end.png")
        # the dashboard on the same phone, with this session's data
        page.goto(server.url + "/admin")
        page.fill("#token", ADMIN_TOKEN)
        page.click("#login-form button")
        page.wait_for_selector("#kpi-players")
        page.wait_for_function("document.getElementById('live-status').textContent.startsWith('updated')")
        save_screenshot(page, shots / "admin-phone.png")
        assert errors == []
    assert {p.name for p in shots.iterdir()} >= {
        "admin-phone.png",
        "onboarding.png",
        "play-light.png",
        "play-dark.png",
        "correction.png",
        "end.png",
    }
