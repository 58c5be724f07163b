"""Instructed and plain turns reach the model as the same request but for the clause's text.

Checked where it matters: on the wire, as a recording OpenAI-compatible server receives the requests,
and in the prompt the transformers backend renders from the tiny model's chat template.
"""

from __future__ import annotations

import io
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.recording_server import RecordingServer, last_user_text, recording_server
from gap.game import PLAIN_INSTRUCTION, SYSTEM_PROMPT, TAINT_INSTRUCTION, instruction_for, turn_prompt
from gap.game.taint import CLAUSE_SEPARATOR
from gap.models.base import ImageInput
from gap.models.openai_backend import OpenAIModel

HISTORIES: list[list[tuple[str, str]]] = [
    [],
    [("What is it?", "A car.")],
    [("What is it?", "A car."), ("Is it parked?", "Yes, by the kerb.")],
    [("What is it?", "A car."), ("Is it parked?", "Yes."), ("Any people?", "Two, on the left.")],
]
QUESTION = "What colour is the car?"


def png(colour: tuple[int, int, int]) -> ImageInput:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buffer, "PNG")
    return ImageInput(buffer.getvalue(), "image/png")


def client_for(server: RecordingServer, *, timeout: float = 10) -> OpenAIModel:
    return OpenAIModel(
        "recorded", base_url=server.base_url, api_key="sk-test", timeout=timeout, max_new_tokens=24
    )


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    with recording_server() as running:
        yield running


@pytest.fixture
def refusing_server() -> Iterator[RecordingServer]:
    with recording_server(refuse_system=True) as running:
        yield running


def without_clause(body: dict[str, Any], clause: str) -> dict[str, Any]:
    """The body with the clause cut from the end of the last user message (which must end with it)."""
    copy: dict[str, Any] = json.loads(json.dumps(body))
    last = copy["messages"][-1]
    parts = last["content"] if isinstance(last["content"], list) else None
    text = last_user_text(copy)
    assert text.endswith(CLAUSE_SEPARATOR + clause), text
    cut = text[: -len(CLAUSE_SEPARATOR + clause)]
    if parts is None:
        last["content"] = cut
    else:
        (text_part,) = [part for part in parts if part["type"] == "text"]
        text_part["text"] = cut
    return copy


def send_both(
    model: OpenAIModel, server: RecordingServer, history: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Ask the same turn plain then instructed; the two request bodies, in that order."""
    image = png((10, 120, 200))
    for instructed in (False, True):
        prompt = turn_prompt(history, QUESTION, instructed=instructed)
        assert model.answer(image, prompt.messages, system=prompt.system)
    bodies: list[dict[str, Any]] = server.completions()[-2:]
    return bodies


# --- the pure prompt builder ---


@pytest.mark.parametrize("history", HISTORIES, ids=lambda h: f"depth{len(h)}")
def test_prompts_differ_only_in_the_closing_clause(history: list[tuple[str, str]]) -> None:
    plain = turn_prompt(history, QUESTION, instructed=False)
    instructed = turn_prompt(history, QUESTION, instructed=True)
    assert plain.system == instructed.system == SYSTEM_PROMPT
    assert plain.messages[:-1] == instructed.messages[:-1]
    assert [m.role for m in plain.messages] == ["user", "assistant"] * len(history) + ["user"]
    assert plain.messages[-1].text == f"{QUESTION}\n\n{PLAIN_INSTRUCTION}"
    assert instructed.messages[-1].text == f"{QUESTION}\n\n{TAINT_INSTRUCTION}"
    assert all(
        PLAIN_INSTRUCTION not in m.text and TAINT_INSTRUCTION not in m.text for m in plain.messages[:-1]
    )


def test_style_lives_in_the_shared_system_prompt_only() -> None:
    """Length and tone words in one clause would make that kind of answer read differently."""
    for style in ("short", "natural", "sentence", "tone", "brief"):
        assert style not in PLAIN_INSTRUCTION.lower() and style not in TAINT_INSTRUCTION.lower()
    assert "short" in SYSTEM_PROMPT and "tone" in SYSTEM_PROMPT
    # similar lengths, so prefill time does not tell them apart either
    assert abs(len(PLAIN_INSTRUCTION) - len(TAINT_INSTRUCTION)) < 0.15 * len(TAINT_INSTRUCTION)


# --- on the wire ---


@pytest.mark.parametrize("history", HISTORIES, ids=lambda h: f"depth{len(h)}")
def test_server_receives_the_same_request_but_for_the_clause(
    server: RecordingServer, history: list[tuple[str, str]]
) -> None:
    plain, instructed = send_both(client_for(server), server, history)
    assert without_clause(plain, PLAIN_INSTRUCTION) == without_clause(instructed, TAINT_INSTRUCTION)
    # spelled out: roles, order, content parts, image position, and every generation setting
    assert [m["role"] for m in plain["messages"]] == ["system", "user"] + ["assistant", "user"] * len(history)
    assert plain["messages"][0]["content"] == SYSTEM_PROMPT
    first = plain["messages"][1]["content"]
    assert [part["type"] for part in first] == ["image_url", "text"]
    assert {k: v for k, v in plain.items() if k != "messages"} == {
        "model": "recorded",
        "temperature": 0,
        "max_tokens": 24,
        "stream": False,
    }


@pytest.mark.parametrize("history", HISTORIES, ids=lambda h: f"depth{len(h)}")
def test_both_kinds_share_the_prefix_up_to_the_clause(
    server: RecordingServer, history: list[tuple[str, str]]
) -> None:
    """What a prefix-caching server caches (system prompt, image, history, question) is byte-identical."""
    plain, instructed = (
        json.dumps(body["messages"]) for body in send_both(client_for(server), server, history)
    )
    shared = next(i for i, (a, b) in enumerate(zip(plain, instructed, strict=False)) if a != b)
    clause_start = plain.index(json.dumps(CLAUSE_SEPARATOR + PLAIN_INSTRUCTION)[1:-1])
    assert plain[:clause_start].endswith(QUESTION)
    assert shared >= clause_start


def test_start_up_probe_spares_every_answer_the_retry(refusing_server: RecordingServer) -> None:
    model = client_for(refusing_server)
    model.load()
    (probe,) = refusing_server.bodies
    assert probe["max_tokens"] == 1 and probe["messages"][0]["role"] == "system"
    for history in HISTORIES:
        plain, instructed = send_both(model, refusing_server, history)
        assert without_clause(plain, PLAIN_INSTRUCTION) == without_clause(instructed, TAINT_INSTRUCTION)
        assert plain["messages"][0]["role"] == "user"
        assert plain["messages"][0]["content"][1]["text"].startswith(SYSTEM_PROMPT + "\n\n")
    # one probe, then exactly one request per answer: no 400, no retry, for either kind
    assert len(refusing_server.bodies) == 1 + 2 * len(HISTORIES)
    assert all(m["role"] != "system" for body in refusing_server.bodies[1:] for m in body["messages"])


def test_model_start_up_of_gap_serve_probes_the_server(refusing_server: RecordingServer) -> None:
    from gap.cli._common import ready_model
    from gap.config import Settings

    ready = ready_model(Settings(model="openai:recorded", openai_base_url=refusing_server.base_url))
    assert [body["max_tokens"] for body in refusing_server.bodies] == [1]
    prompt = turn_prompt([], QUESTION, instructed=True)
    assert ready.answer(png((9, 9, 9)), prompt.messages, system=prompt.system)
    assert len(refusing_server.bodies) == 2  # the answer went through at once


def test_app_built_from_settings_probes_before_its_first_answer(
    refusing_server: RecordingServer, tmp_path: Path
) -> None:
    """An app left to load its own model (no ``model=``) does the same start-up work on first use."""
    from gap.config import Settings
    from gap.web.app import create_app

    settings = Settings(data_dir=tmp_path, model="openai:recorded", openai_base_url=refusing_server.base_url)
    app = create_app(settings)
    model = app.state.context.model()
    assert [body["max_tokens"] for body in refusing_server.bodies] == [1]
    prompt = turn_prompt([], QUESTION, instructed=False)
    assert model.answer(png((4, 5, 6)), prompt.messages, system=prompt.system)
    assert len(refusing_server.bodies) == 2  # no 400 and retry on the first answer


def test_probe_of_a_server_that_takes_system_messages_changes_nothing(server: RecordingServer) -> None:
    model = client_for(server)
    model.load()
    plain, instructed = send_both(model, server, HISTORIES[1])
    assert plain["messages"][0] == instructed["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}


def test_without_the_probe_the_first_turn_pays_the_retry_whatever_its_kind(
    refusing_server: RecordingServer,
) -> None:
    """The fallback stays for servers the probe could not reach; every turn has a system prompt, so it
    hits the first turn, plain or instructed, once."""
    model = client_for(refusing_server)
    prompt = turn_prompt([], QUESTION, instructed=False)
    assert model.answer(png((1, 2, 3)), prompt.messages, system=prompt.system)
    assert [b["messages"][0]["role"] for b in refusing_server.bodies] == ["system", "user"]


def test_probe_of_an_unreachable_server_is_left_to_the_first_answer(caplog: pytest.LogCaptureFixture) -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    model = OpenAIModel("m", base_url=f"http://127.0.0.1:{port}/v1", api_key="x", timeout=5, max_new_tokens=4)
    with caplog.at_level(logging.WARNING, logger="gap.models.openai_backend"):
        model.load()
    assert "could not probe" in caplog.text


# --- in the transformers backend's rendered prompt ---


@pytest.fixture(scope="module")
def tiny(tiny_vlm_dir: Path) -> Any:
    from gap.models.transformers_backend import TransformersModel

    model = TransformersModel(str(tiny_vlm_dir), timeout=30, max_new_tokens=6)
    model.load()
    return model


@pytest.mark.parametrize("history", HISTORIES, ids=lambda h: f"depth{len(h)}")
def test_rendered_prompts_differ_only_in_the_clause(tiny: Any, history: list[tuple[str, str]]) -> None:
    rendered = {}
    for instructed in (False, True):
        prompt = turn_prompt(history, QUESTION, instructed=instructed)
        rendered[instructed] = tiny.prompt_text(prompt.messages, prompt.system)
    plain, instructed = rendered[False], rendered[True]
    assert plain.replace(PLAIN_INSTRUCTION, TAINT_INSTRUCTION) == instructed
    assert plain.count("<image>") == 1 and plain.index("<image>") < plain.index(
        history[0][0] if history else QUESTION
    )
    assert plain.startswith(f"<|im_start|>System: {SYSTEM_PROMPT}<end_of_utterance>\nUser:<image>")
    # everything after the clause (the end of the turn and the generation prompt) is the same too
    assert plain.split(PLAIN_INSTRUCTION)[1] == instructed.split(TAINT_INSTRUCTION)[1]


def test_generate_gets_the_same_settings_and_pixels_for_both_kinds(
    tiny: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    import transformers

    calls: list[dict[str, Any]] = []
    original = transformers.Idefics3ForConditionalGeneration.generate

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(transformers.Idefics3ForConditionalGeneration, "generate", spy)
    image = png((200, 40, 40))
    for kind in (False, True):
        prompt = turn_prompt(HISTORIES[2], QUESTION, instructed=kind)
        tiny.answer(image, prompt.messages, system=prompt.system)
    plain, instructed = calls
    tensors = {"input_ids", "attention_mask", "pixel_values", "pixel_attention_mask"}
    assert set(plain) == set(instructed)
    settings = {k: v for k, v in plain.items() if k not in tensors | {"max_time"}}
    assert settings == {k: v for k, v in instructed.items() if k not in tensors | {"max_time"}}
    assert settings["do_sample"] is False and settings["max_new_tokens"] == 6
    assert torch.equal(plain["pixel_values"], instructed["pixel_values"])
    # the token prefix is shared up to the clause: same tokens for system prompt, image and history
    ids_plain, ids_instructed = plain["input_ids"][0].tolist(), instructed["input_ids"][0].tolist()
    shared = next(i for i, (a, b) in enumerate(zip(ids_plain, ids_instructed, strict=False)) if a != b)
    processor = tiny._loaded[0]
    last_turn = processor.decode(ids_plain[:shared]).rsplit("User:", 1)[1]
    assert last_turn.startswith(f" {QUESTION}{CLAUSE_SEPARATOR}")


def test_a_template_refusing_system_roles_folds_the_prompt_for_both_kinds(no_system_vlm_dir: Path) -> None:
    from gap.models.transformers_backend import TransformersModel

    model = TransformersModel(str(no_system_vlm_dir), timeout=30, max_new_tokens=4)
    rendered = [
        model.prompt_text(turn_prompt(HISTORIES[1], QUESTION, instructed=kind).messages, SYSTEM_PROMPT)
        for kind in (False, True)
    ]
    assert rendered[0].replace(PLAIN_INSTRUCTION, TAINT_INSTRUCTION) == rendered[1]
    assert rendered[0].startswith(f"<|im_start|>User:<image>{SYSTEM_PROMPT}\n\nWhat is it?")
    assert instruction_for(True) in rendered[1]
