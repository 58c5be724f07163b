"""Suspicious play (issue 12): the pure flag rules case by case, then flags from real play through
the API, shown on the dashboard and at /admin/api/flags, with only a keyed hash of each IP stored."""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from fixtures.game import ManualClock, seed_images
from gap.config import Settings
from gap.db.engine import make_engine, make_sessionmaker, transaction
from gap.db.models import Player
from gap.models.base import ChatMessage, ImageInput
from gap.quality._flags import (
    ALWAYS_WRONG,
    MANY_ACCOUNTS,
    SUB_SECOND,
    FlagRules,
    PlayStats,
    flag_players,
    flags_of,
)
from gap.services.flags import KEY_FILE
from gap.web.app import create_app

TOKEN = "flags-admin-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def stats(
    verdicts: int = 30,
    wrong: int = 10,
    timed: int = 30,
    median: float | None = 4.0,
    accounts: int = 1,
    name: str = "p",
) -> PlayStats:
    return PlayStats(name, name, verdicts, wrong, timed, median, accounts)


@pytest.mark.parametrize(
    ("player", "expected"),
    [
        (stats(), ()),
        (stats(wrong=27), (ALWAYS_WRONG,)),  # 90 %: at the threshold
        (stats(wrong=26), ()),  # 86.7 %
        (stats(verdicts=19, wrong=19, timed=19), ()),  # all Wrong, but too few verdicts to tell
        (stats(verdicts=20, wrong=20, timed=20), (ALWAYS_WRONG,)),
        (stats(median=0.4), (SUB_SECOND,)),
        (stats(median=1.0), ()),  # one second is not under one second
        (stats(timed=9, median=0.1), ()),  # too few timed verdicts
        (stats(median=None, timed=0), ()),
        (stats(accounts=3), (MANY_ACCOUNTS,)),
        (stats(accounts=2), ()),
        (stats(accounts=0), ()),  # IP unknown
        (stats(wrong=30, median=0.2, accounts=5), (ALWAYS_WRONG, SUB_SECOND, MANY_ACCOUNTS)),
    ],
)
def test_flag_rules(player: PlayStats, expected: tuple[str, ...]) -> None:
    flagged = flags_of(player)
    assert flagged.flags == expected
    assert len(flagged.reasons) == len(expected)


def test_flagged_players_come_most_flags_first_and_rules_are_adjustable() -> None:
    players = [
        stats(name="calm"),
        stats(name="bot", wrong=30, median=0.2),
        stats(name="alt", accounts=4),
        stats(name="alt2", accounts=4),
    ]
    assert [f.stats.name for f in flag_players(players)] == ["bot", "alt", "alt2"]
    strict = FlagRules(wrong_share=0.3)
    # now everyone is "always Wrong" too: the sock puppets tie with the bot on two flags
    assert [f.stats.name for f in flag_players(players, strict)] == ["alt", "alt2", "bot", "calm"]
    assert "10 of 30 verdicts Wrong" in flags_of(stats(), strict).reasons[0]


class CannedModel:
    name = "canned"

    def answer(self, image: ImageInput, messages: list[ChatMessage], system: str | None = None) -> str:
        return "Two red apples on a plate."


def sign_up(client: TestClient, name: str) -> dict[str, str]:
    response = client.post("/api/auth/guest", json={"name": name})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def judge(
    client: TestClient, auth: dict[str, str], verdicts: list[str], clock: ManualClock, think_s: float
) -> None:
    """One verdict per entry, ``think_s`` seconds after each answer; new sessions as they finish."""
    session_id: str | None = None
    for i, verdict in enumerate(verdicts):
        state = client.get(f"/api/sessions/{session_id}", headers=auth).json() if session_id else None
        if state is None or state["status"] == "finished":
            state = client.post("/api/sessions", headers=auth).json()
            session_id = state["session_id"]
        asked = client.post(
            f"/api/rounds/{state['round']['round_id']}/questions", headers=auth, json={"question": f"Q{i}?"}
        )
        assert asked.status_code == 201, asked.text
        clock.advance(think_s)
        judged = client.post(
            f"/api/turns/{asked.json()['turn_id']}/verdict", headers=auth, json={"verdict": verdict}
        )
        assert judged.status_code == 200, judged.text


@pytest.fixture
def app_and_clock(settings: Settings) -> Iterator[tuple[Any, ManualClock, Settings]]:
    current = settings.model_copy(update={"admin_token": TOKEN, "session_images": 4})
    seed_images(current, per_pool=3)
    clock = ManualClock()
    app = create_app(current, model=CannedModel(), clock=clock, rng=random.Random(2))
    with TestClient(app):  # runs the app's start-up once; the clients below share it
        yield app, clock, current


@pytest.mark.db
def test_suspicious_play_is_flagged_from_real_play(app_and_clock: tuple[Any, ManualClock, Settings]) -> None:
    app, clock, settings = app_and_clock

    def from_ip(ip: str) -> TestClient:
        return TestClient(app, client=(ip, 40000))

    careful = from_ip("10.0.0.1")
    judge(careful, sign_up(careful, "Ada"), ["wrong", "correct"] * 6, clock, think_s=3.0)
    bot = from_ip("10.0.0.2")
    judge(bot, sign_up(bot, "Spam"), ["wrong"] * 20, clock, think_s=0.0)
    farm = from_ip("10.0.0.9")
    for n in range(3):
        sign_up(farm, f"Sock{n}")

    flagged = {f["name"]: f for f in from_ip("10.0.0.1").get("/admin/api/flags", headers=BEARER).json()}
    assert set(flagged) == {"Spam", "Sock0", "Sock1", "Sock2"}
    assert flagged["Spam"]["flags"] == [ALWAYS_WRONG, SUB_SECOND]
    assert (flagged["Spam"]["verdicts"], flagged["Spam"]["wrong"], flagged["Spam"]["median_verdict_s"]) == (
        20,
        20,
        0.0,
    )
    assert flagged["Spam"]["accounts_on_ip"] == 1
    assert all(flagged[f"Sock{n}"]["flags"] == [MANY_ACCOUNTS] for n in range(3))
    assert flagged["Sock0"]["accounts_on_ip"] == 3 and flagged["Sock0"]["verdicts"] == 0
    assert from_ip("10.0.0.1").get("/admin/api/flags").status_code == 401

    page = from_ip("10.0.0.1").get("/admin", headers=BEARER).text
    table = page[page.index('id="flags"') :]
    table = table[: table.index("</table>")]
    assert "Spam" in table and "always-wrong, sub-second" in table and "Sock1" in table and "Ada" not in table

    # only a keyed hash of each IP is stored: equal for one IP, different across IPs, not the bare hash
    key = (settings.data_dir / KEY_FILE).read_bytes().strip()
    engine = make_engine(settings.resolved_database_url)
    with transaction(make_sessionmaker(engine)) as db:
        hashes = dict(db.execute(select(Player.name, Player.signup_ip_hash)).all())
    engine.dispose()
    assert hashes["Sock0"] == hashes["Sock1"] == hashes["Sock2"] != hashes["Spam"] != hashes["Ada"]
    assert hashes["Ada"] == hmac.new(key, b"10.0.0.1", hashlib.sha256).hexdigest()
    assert hashes["Ada"] != hashlib.sha256(b"10.0.0.1").hexdigest()
    assert not any("10.0.0" in str(h) for h in hashes.values())
