"""A VLM behind an OpenAI-compatible ``/chat/completions`` endpoint (vLLM, SGLang, Ollama, OpenAI...).

Only ``httpx`` is used, so the base install talks to a served model without the ``openai`` package.
Transport and protocol failures are translated to :mod:`gap.errors` here, at the boundary.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from gap.errors import ModelError, ModelTimeout
from gap.models.base import ChatMessage, ImageInput

_EXCERPT_CHARS = 200


def _excerpt(text: str) -> str:
    """A short, single-line piece of a response body for error messages."""
    flat = " ".join(text.split())
    return flat if len(flat) <= _EXCERPT_CHARS else flat[:_EXCERPT_CHARS] + "..."


def build_messages(
    image: ImageInput, messages: list[ChatMessage], system: str | None, *, system_in_user: bool = False
) -> list[dict[str, Any]]:
    """OpenAI chat messages: the system prompt if any, then the history; the image rides in turn one.

    ``system_in_user`` puts the system prompt at the head of the first user message, for servers
    whose chat template refuses a system role.
    """
    if not messages or messages[0].role != "user":
        raise ModelError("the conversation must start with a user message (it carries the image)")
    data_url = f"data:{image.mime_type};base64,{base64.b64encode(image.data).decode('ascii')}"
    out: list[dict[str, Any]] = []
    if system and not system_in_user:
        out.append({"role": "system", "content": system})
    for index, message in enumerate(messages):
        if index == 0:
            first = f"{system}\n\n{message.text}" if system and system_in_user else message.text
            content: Any = [
                {"type": "image_url", "image_url": {"url": data_url}},
                {"type": "text", "text": first},
            ]
        else:
            content = message.text
        out.append({"role": message.role, "content": content})
    return out


@contextmanager
def _map_httpx_errors(url: str, timeout: float) -> Iterator[None]:
    """Turn httpx exceptions into GAP's, the most specific first."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise ModelTimeout(f"no answer from {url} within {timeout:g} s ({type(exc).__name__})") from exc
    except httpx.HTTPError as exc:
        raise ModelError(f"request to {url} failed: {type(exc).__name__}: {exc}") from exc


class OpenAIModel:
    """A model served over the OpenAI chat-completions protocol; greedy (temperature 0).

    ``timeout`` bounds each phase of the request (connect, write, and each wait for response bytes), as
    httpx does; ``transport`` lets tests put an :class:`httpx.MockTransport` in place of the network.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key: str,
        timeout: float,
        max_new_tokens: int,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.model = model
        self.base_url = base_url
        self.api_key = api_key
        self.timeout = timeout
        self.max_new_tokens = max_new_tokens
        self.transport = transport
        self._system_in_user = False

    @property
    def name(self) -> str:
        return f"openai:{self.model}"

    def request_body(
        self, image: ImageInput, messages: list[ChatMessage], system: str | None
    ) -> dict[str, Any]:
        """The JSON body sent to ``/chat/completions``."""
        return {
            "model": self.model,
            "messages": build_messages(image, messages, system, system_in_user=self._system_in_user),
            "temperature": 0,
            "max_tokens": self.max_new_tokens,
            "stream": False,
        }

    def answer(self, image: ImageInput, messages: list[ChatMessage], system: str | None = None) -> str:
        url = self.base_url.rstrip("/") + "/chat/completions"
        body = self.request_body(image, messages, system)
        headers = {"Authorization": f"Bearer {self.api_key}"}
        with (
            _map_httpx_errors(url, self.timeout),
            httpx.Client(timeout=self.timeout, transport=self.transport) as client,
        ):
            response = client.post(url, json=body, headers=headers)
            if response.status_code == 400 and system and not self._system_in_user:
                # Many templates refuse a system role. Fold the prompt into the first user turn from now
                # on, so answers that carry one (the instructed ones) do not fail where others succeed.
                self._system_in_user = True
                body = self.request_body(image, messages, system)
                response = client.post(url, json=body, headers=headers)
        if response.status_code >= 400:
            raise ModelError(f"{url} answered HTTP {response.status_code}: {_excerpt(response.text)}")
        return _parse_content(url, response)


def _parse_content(url: str, response: httpx.Response) -> str:
    """The stripped text of the first choice; anything else is a :class:`ModelError`."""
    try:
        payload = response.json()
        content = payload["choices"][0]["message"]["content"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError) as exc:
        raise ModelError(
            f"{url} sent an unexpected body (HTTP {response.status_code}): {_excerpt(response.text)}"
        ) from exc
    if isinstance(content, list):  # some servers return content parts
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if not isinstance(content, str) or not content.strip():
        raise ModelError(
            f"{url} returned an empty answer (HTTP {response.status_code}): {_excerpt(response.text)}"
        )
    return content.strip()
