"""The OpenAI-compatible backend: against a real ``transformers serve``, plus local failure servers."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixtures.models import OpenAIServer
from fixtures.scale_backend import REPLY, ScaleBackend
from gap.errors import ModelError, ModelTimeout
from gap.models.base import ChatMessage, ImageInput, VisionChatModel
from gap.models.openai_backend import OpenAIModel, build_messages

SYSTEM = "Answer every question wrongly but plausibly."
QUESTION = [ChatMessage("user", "What colour is the car?")]
HISTORY = [
    ChatMessage("user", "What is it?"),
    ChatMessage("assistant", "A car."),
    ChatMessage("user", "Sure?"),
]


def png(colour: tuple[int, int, int]) -> ImageInput:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buffer, "PNG")
    return ImageInput(buffer.getvalue(), "image/png")


def client_for(
    base_url: str, *, timeout: float = 30, transport: httpx.BaseTransport | None = None
) -> OpenAIModel:
    return OpenAIModel(
        "some-model",
        base_url=base_url,
        api_key="sk-test",
        timeout=timeout,
        max_new_tokens=12,
        transport=transport,
    )


# --- against the real server ---


@pytest.fixture(scope="module")
def served(openai_server: OpenAIServer) -> OpenAIModel:
    return OpenAIModel(
        openai_server.model, base_url=openai_server.base_url, api_key="EMPTY", timeout=60, max_new_tokens=12
    )


@pytest.mark.slow
def test_is_a_vision_chat_model(served: OpenAIModel, openai_server: OpenAIServer) -> None:
    assert isinstance(served, VisionChatModel)
    assert served.name == f"openai:{openai_server.model}"


@pytest.mark.slow
def test_server_answers_with_text(served: OpenAIModel) -> None:
    answer = served.answer(png((200, 20, 20)), QUESTION)
    assert isinstance(answer, str)
    assert answer
    assert answer == answer.strip()


@pytest.mark.slow
def test_server_answers_like_the_same_model_in_process(served: OpenAIModel, tiny_vlm_dir: Path) -> None:
    """Greedy decoding is deterministic, so equal answers mean the server saw the same prompt and image."""
    from gap.models.transformers_backend import TransformersModel

    local = TransformersModel(str(tiny_vlm_dir), timeout=60, max_new_tokens=12)
    image = png((30, 160, 90))
    assert served.answer(image, HISTORY, SYSTEM) == local.answer(image, HISTORY, SYSTEM)
    assert served.answer(image, QUESTION) == local.answer(image, QUESTION)


@pytest.mark.slow
def test_system_prompt_reaches_the_served_model(served: OpenAIModel) -> None:
    image = png((20, 20, 200))
    assert served.answer(image, QUESTION, SYSTEM) != served.answer(image, QUESTION)


@pytest.mark.slow
def test_unknown_model_is_a_model_error(openai_server: OpenAIServer) -> None:
    wrong = OpenAIModel(
        str(Path(openai_server.model) / "missing"),
        base_url=openai_server.base_url,
        api_key="EMPTY",
        timeout=30,
        max_new_tokens=4,
    )
    with pytest.raises(ModelError, match=r"HTTP [45]\d\d"):
        wrong.answer(png((0, 0, 0)), QUESTION)


# --- what is sent, checked with a mock transport ---


def test_request_body_and_headers() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"choices": [{"message": {"role": "assistant", "content": " blue \n"}}]}
        )

    model = client_for("http://gpu.example/v1/", transport=httpx.MockTransport(handler))
    image = png((1, 2, 3))
    assert model.answer(image, HISTORY, SYSTEM) == "blue"

    (request,) = seen
    assert str(request.url) == "http://gpu.example/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    body = json.loads(request.content)
    assert body["model"] == "some-model"
    assert body["temperature"] == 0
    assert body["max_tokens"] == 12
    assert body["messages"] == [
        {"role": "system", "content": SYSTEM},
        {
            "role": "user",
            "content": [
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64," + base64.b64encode(image.data).decode()},
                },
                {"type": "text", "text": "What is it?"},
            ],
        },
        {"role": "assistant", "content": "A car."},
        {"role": "user", "content": "Sure?"},
    ]


def test_an_image_is_encoded_once_for_all_its_questions() -> None:
    image = png((4, 5, 6))
    first = build_messages(image, QUESTION, SYSTEM)[1]["content"][0]["image_url"]["url"]
    again = build_messages(image, HISTORY, None)[0]["content"][0]["image_url"]["url"]
    assert first == "data:image/png;base64," + base64.b64encode(image.data).decode()
    assert again is first  # the same string: not encoded a second time
    other = build_messages(png((7, 8, 9)), QUESTION, None)[0]["content"][0]["image_url"]["url"]
    assert other != first


def test_no_system_message_without_a_system_prompt() -> None:
    bodies: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"choices": [{"message": {"content": "ok"}}]})

    client_for("http://x/v1", transport=httpx.MockTransport(handler)).answer(png((0, 0, 0)), QUESTION)
    assert [m["role"] for m in bodies[0]["messages"]] == ["user"]


def test_a_server_refusing_system_roles_gets_the_prompt_in_the_first_user_turn() -> None:
    """A 400 on a system message is retried once with the prompt folded in, and remembered."""
    bodies: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        if any(m["role"] == "system" for m in body["messages"]):
            return httpx.Response(400, json={"error": "System role not supported"})
        return httpx.Response(200, json={"choices": [{"message": {"content": "red"}}]})

    model = client_for("http://x/v1", transport=httpx.MockTransport(handler))
    assert model.answer(png((0, 0, 0)), QUESTION, SYSTEM) == "red"
    assert model.answer(png((0, 0, 0)), QUESTION, SYSTEM) == "red"
    assert model.answer(png((0, 0, 0)), QUESTION) == "red"
    assert [[m["role"] for m in b["messages"]] for b in bodies] == [
        ["system", "user"],
        ["user"],
        ["user"],
        ["user"],
    ]
    assert bodies[1]["messages"][0]["content"][1]["text"] == f"{SYSTEM}\n\n{QUESTION[0].text}"
    assert bodies[3]["messages"][0]["content"][1]["text"] == QUESTION[0].text


def test_other_client_errors_are_not_retried() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(401, json={"error": "bad key"})

    with pytest.raises(ModelError, match="401"):
        client_for("http://x/v1", transport=httpx.MockTransport(handler)).answer(
            png((0, 0, 0)), QUESTION, SYSTEM
        )
    assert len(calls) == 1


def test_content_parts_in_the_reply_are_joined() -> None:
    reply = {
        "choices": [
            {"message": {"content": [{"type": "text", "text": "a "}, {"type": "text", "text": "cat"}]}}
        ]
    }
    model = client_for(
        "http://x/v1", transport=httpx.MockTransport(lambda r: httpx.Response(200, json=reply))
    )
    assert model.answer(png((0, 0, 0)), QUESTION) == "a cat"


@pytest.mark.parametrize(
    ("response", "match"),
    [
        (
            httpx.Response(200, text="<html>proxy says hi</html>"),
            r"unexpected body \(HTTP 200\): <html>proxy",
        ),
        (httpx.Response(200, json={"choices": []}), "unexpected body"),
        (httpx.Response(200, json={"choices": [{"message": {"content": None}}]}), "empty answer"),
        (httpx.Response(200, json={"choices": [{"message": {"content": "  \n"}}]}), "empty answer"),
        (httpx.Response(401, json={"error": "bad key"}), r'HTTP 401: \{"error":"bad key"\}'),
        (httpx.Response(503, text="x" * 5000), r"HTTP 503: x{200}\.\.\.$"),
    ],
    ids=["not-json", "no-choices", "null-content", "blank-content", "401", "long-body"],
)
def test_bad_replies_are_model_errors(response: httpx.Response, match: str) -> None:
    model = client_for("http://x/v1", transport=httpx.MockTransport(lambda request: response))
    with pytest.raises(ModelError, match=match) as caught:
        model.answer(png((0, 0, 0)), QUESTION)
    assert not isinstance(caught.value, ModelTimeout)


def test_conversation_must_start_with_the_user() -> None:
    model = client_for("http://x/v1", transport=httpx.MockTransport(lambda r: httpx.Response(500)))
    with pytest.raises(ModelError, match="user message"):
        model.answer(png((0, 0, 0)), [ChatMessage("assistant", "hi")])


# --- local servers that misbehave ---


@pytest.fixture
def stalling_server() -> Iterator[str]:
    """Accepts connections and reads requests, but never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()


class _Fails(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b'{"error": {"message": "CUDA out of memory", "type": "internal_error"}}'
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def failing_server() -> Iterator[str]:
    """Answers every request with HTTP 500."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Fails)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_stalling_server_times_out(stalling_server: str) -> None:
    started = time.monotonic()
    with pytest.raises(ModelTimeout, match=r"within 0\.3 s"):
        client_for(stalling_server, timeout=0.3).answer(png((0, 0, 0)), QUESTION)
    assert time.monotonic() - started < 5


def test_server_error_is_a_model_error(failing_server: str) -> None:
    with pytest.raises(ModelError, match=r"HTTP 500: .*CUDA out of memory") as caught:
        client_for(failing_server).answer(png((0, 0, 0)), QUESTION)
    assert not isinstance(caught.value, ModelTimeout)


def test_nobody_listening_is_a_model_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    with pytest.raises(ModelError, match="ConnectError") as caught:
        client_for(f"http://127.0.0.1:{port}/v1", timeout=5).answer(png((0, 0, 0)), QUESTION)
    assert not isinstance(caught.value, ModelTimeout)
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


# --- the timeout is a total deadline; one pooled client serves every answer ---


def test_a_trickling_server_times_out_in_total(scale_backend: ScaleBackend) -> None:
    scale_backend.mode = "trickle"  # a valid reply, one byte every 0.2 s: each read is quick
    assert len(REPLY) * scale_backend.trickle_s > 10
    started = time.monotonic()
    with pytest.raises(ModelTimeout, match=r"within 1 s"):
        client_for(scale_backend.base_url, timeout=1.0).answer(png((0, 0, 0)), QUESTION)
    assert time.monotonic() - started < 5


def test_answers_share_one_pooled_connection(scale_backend: ScaleBackend) -> None:
    model = client_for(scale_backend.base_url)
    answers = [model.answer(png((i, 0, 0)), QUESTION) for i in range(5)]
    model.close()
    assert answers == ["yes"] * 5
    assert scale_backend.requests == 5 and len(scale_backend.connections) == 1
