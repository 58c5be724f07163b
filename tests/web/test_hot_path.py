"""The hot path stays small (issue 12): a question and a verdict cost a few SQL statements each,
on the first question of a round as on the twentieth."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio.to_thread
import pytest
from sqlalchemy import Engine, event

from fixtures.game import login, seed_images
from gap.config import Settings
from gap.models.base import ChatMessage, ImageInput

pytestmark = pytest.mark.db


class InstantModel:
    name = "instant"

    def answer(self, image: ImageInput, messages: list[ChatMessage], system: str | None = None) -> str:
        return "yes"


@pytest.fixture
def statements() -> Iterator[list[str]]:
    """Every SQL statement any engine runs meanwhile (transaction control left out: it differs
    between SQLite's explicit BEGIN and psycopg's implicit one)."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")):
            seen.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    yield seen
    event.remove(Engine, "before_cursor_execute", record)


def test_question_and_verdict_cost_a_few_statements_however_long_the_round(
    settings: Settings, make_client: Any, statements: list[str]
) -> None:
    seed_images(settings)
    client = make_client(InstantModel(), round_seconds=100000)
    auth = login(client)
    round_id = client.post("/api/sessions", headers=auth).json()["round"]["round_id"]
    costs: list[tuple[int, int]] = []
    for _ in range(20):
        statements.clear()
        asked = client.post(
            f"/api/rounds/{round_id}/questions", json={"question": "Is it red?"}, headers=auth
        )
        assert asked.status_code == 201, asked.text
        asking = len(statements)
        statements.clear()
        judged = client.post(
            f"/api/turns/{asked.json()['turn_id']}/verdict", json={"verdict": "correct"}, headers=auth
        )
        assert judged.json()["round_status"] == "active"
        costs.append((asking, len(statements)))
    # Who asks and their round in one query, the turns so far, the new turn; then the answer and the
    # round's clock (one statement on PostgreSQL, two on SQLite, which has no UPDATE inside WITH). A
    # Correct verdict: who judges and their turn, then the verdict. Main ran 11 and 6 (a login query
    # of its own, lazy loads, refreshes).
    on_postgres = settings.resolved_database_url.startswith("postgresql")
    assert costs == [(4 if on_postgres else 5, 2)] * 20, costs

    statements.clear()
    asked = client.post(f"/api/rounds/{round_id}/questions", json={"question": "Is it blue?"}, headers=auth)
    statements.clear()
    judged = client.post(
        f"/api/turns/{asked.json()['turn_id']}/verdict", json={"verdict": "wrong"}, headers=auth
    )
    assert judged.json()["round_status"] == "ended" and judged.json()["next_round"] is not None
    # Who judges, the verdict, the round's end, the rounds still open, the next one's start.
    assert len(statements) == 5, statements


def test_a_question_is_two_thread_hops_and_a_verdict_one(
    settings: Settings, make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening the turn, then the model's answer and its storing in one (the gate's worker thread
    stores it); a verdict is a plain sync route. Main hopped three times per question."""
    seed_images(settings)
    client = make_client(InstantModel(), round_seconds=100000)
    auth = login(client)
    round_id = client.post("/api/sessions", headers=auth).json()["round"]["round_id"]
    hops: list[str] = []
    run_sync = anyio.to_thread.run_sync

    async def counted(func: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(func, "__name__", repr(func)))
        return await run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    asked = client.post(f"/api/rounds/{round_id}/questions", json={"question": "Is it red?"}, headers=auth)
    assert asked.status_code == 201 and asked.json()["answer"] == "yes", asked.text
    assert len(hops) == 2, hops
    hops.clear()
    judged = client.post(
        f"/api/turns/{asked.json()['turn_id']}/verdict", json={"verdict": "correct"}, headers=auth
    )
    assert judged.status_code == 200, judged.text
    assert len(hops) == 1, hops
