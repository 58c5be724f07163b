"""Reference answers: the prompt, retries, bounded concurrency, and real OpenAI-compatible servers."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from datahelpers import write_png

from fixtures.models import OpenAIServer
from gap.data import ReferenceJob, ask_reference, reference_system_prompt, run_reference_jobs
from gap.errors import ConfigError, ModelError, ModelTimeout
from gap.models.base import ChatMessage, ImageInput
from gap.models.openai_backend import OpenAIModel


@pytest.fixture
def job(tmp_path: Path) -> ReferenceJob:
    image = write_png(tmp_path / "a.png", (10, 20, 30))
    messages = (
        ChatMessage("user", "What is in the picture?"),
        ChatMessage("assistant", "A street."),
        ChatMessage("user", "How many buses are there?"),
    )
    return ReferenceJob("t1", str(image), "image/png", messages, wrong_answer="There are three buses.")


@dataclass
class ScriptedModel:
    """Fails with the given errors, then answers; records what it was sent."""

    failures: list[Exception] = field(default_factory=list)
    answer_text: str = "There is one bus."
    calls: list[tuple[ImageInput, list[ChatMessage], str | None]] = field(default_factory=list)
    delay: float = 0.0
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return "scripted"

    def answer(self, image: ImageInput, messages: list[ChatMessage], system: str | None = None) -> str:
        with self.lock:
            self.calls.append((image, messages, system))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            failure = self.failures.pop(0) if self.failures else None
        try:
            time.sleep(self.delay)
            if failure:
                raise failure
            return self.answer_text
        finally:
            with self.lock:
                self.in_flight -= 1


def test_the_model_sees_image_history_and_the_wrong_answer(job: ReferenceJob) -> None:
    model = ScriptedModel()
    outcome = ask_reference(model, job, retries=0, backoff=0)
    assert outcome.ok and outcome.text == "There is one bus." and outcome.attempts == 1
    image, messages, system = model.calls[0]
    assert image.data == Path(job.image).read_bytes() and image.mime_type == "image/png"
    assert messages == list(job.messages)
    assert system is not None and "There are three buses." in system and "judged wrong" in system


def test_retries_then_succeeds(job: ReferenceJob) -> None:
    model = ScriptedModel(failures=[ModelTimeout("slow"), ModelError("HTTP 500")])
    sleeps: list[float] = []
    outcome = ask_reference(model, job, retries=2, backoff=0.5, sleep=sleeps.append)
    assert outcome.ok and outcome.attempts == 3
    assert sleeps == [0.5, 1.0]


def test_gives_up_after_the_retries_and_reports_the_last_error(job: ReferenceJob) -> None:
    model = ScriptedModel(failures=[ModelError("boom")] * 5)
    outcome = ask_reference(model, job, retries=2, backoff=0, sleep=lambda _: None)
    assert not outcome.ok and outcome.attempts == 3
    assert outcome.error == "ModelError: boom"
    assert len(model.calls) == 3


def test_an_unreadable_image_is_not_sent(job: ReferenceJob, tmp_path: Path) -> None:
    broken = ReferenceJob("t2", str(tmp_path / "absent.png"), "image/png", job.messages, None)
    model = ScriptedModel()
    outcome = ask_reference(model, broken, retries=3, backoff=0)
    assert not outcome.ok and "absent.png" in (outcome.error or "")
    assert not model.calls
    assert "no answer text" in reference_system_prompt(None)


def test_concurrency_is_bounded_and_outcomes_arrive_in_the_calling_thread(job: ReferenceJob) -> None:
    model = ScriptedModel(delay=0.05)
    jobs = [ReferenceJob(f"t{i}", job.image, "image/png", job.messages, "x") for i in range(12)]
    threads: set[int] = set()
    outcomes = run_reference_jobs(
        model, jobs, on_outcome=lambda o: threads.add(threading.get_ident()), concurrency=3, retries=0
    )
    assert sorted(o.turn_id for o in outcomes) == sorted(j.turn_id for j in jobs)
    assert model.max_in_flight <= 3
    assert threads == {threading.get_ident()}
    with pytest.raises(ConfigError):
        run_reference_jobs(model, jobs, on_outcome=print, concurrency=0)


# --- real servers -------------------------------------------------------------------------------


@dataclass
class FailingServer:
    base_url: str
    requests: list[str]


def serve_failures(mode: str) -> Iterator[FailingServer]:
    """An OpenAI-shaped endpoint on 127.0.0.1 that answers HTTP 500 or never in time."""
    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            requests.append(json.loads(body)["model"])
            if mode == "slow":
                time.sleep(1.5)
            payload = json.dumps({"error": {"message": "overloaded"}}).encode()
            self.send_response(500 if mode == "error" else 200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the client may have given up waiting
                self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield FailingServer(f"http://127.0.0.1:{server.server_address[1]}/v1", requests)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def error_server() -> Iterator[FailingServer]:
    yield from serve_failures("error")


@pytest.fixture
def slow_server() -> Iterator[FailingServer]:
    yield from serve_failures("slow")


def reference_model(base_url: str, model: str = "reference", timeout: float = 60) -> OpenAIModel:
    return OpenAIModel(model, base_url=base_url, api_key="EMPTY", timeout=timeout, max_new_tokens=12)


def test_reference_from_a_real_openai_compatible_server(
    job: ReferenceJob, openai_server: OpenAIServer
) -> None:
    model = reference_model(openai_server.base_url, openai_server.model)
    outcome = ask_reference(model, job, retries=1, backoff=0)
    assert outcome.ok and outcome.text and outcome.attempts == 1


@pytest.mark.parametrize("server_fixture", ["error_server", "slow_server"])
def test_failing_servers_are_retried_then_reported(
    job: ReferenceJob, request: pytest.FixtureRequest, server_fixture: str
) -> None:
    server: FailingServer = request.getfixturevalue(server_fixture)
    model = reference_model(server.base_url, timeout=0.3)
    seen = []
    outcomes = run_reference_jobs(model, [job], on_outcome=seen.append, retries=2, backoff=0)
    assert seen == outcomes and not outcomes[0].ok
    assert outcomes[0].attempts == 3 and len(server.requests) == 3
    expected = "ModelTimeout" if server_fixture == "slow_server" else "HTTP 500"
    assert expected in (outcomes[0].error or "")
