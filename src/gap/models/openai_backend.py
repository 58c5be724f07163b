"""A VLM behind an OpenAI-compatible ``/chat/completions`` endpoint (vLLM, SGLang, Ollama, OpenAI...).

Only ``httpx`` is used, so the base install talks to a served model without the ``openai`` package.
Transport and protocol failures are translated to :mod:`gap.errors` here, at the boundary.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from gap.errors import GapError, ModelError, ModelTimeout
from gap.models.base import ChatMessage, ImageInput

log = logging.getLogger(__name__)

_EXCERPT_CHARS = 200
_PROBE_MESSAGES = [
    {"role": "system", "content": "Reply with one word."},
    {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
]


def _excerpt(text: str) -> str:
    """A short, single-line piece of a response body for error messages."""
    flat = " ".join(text.split())
    return flat if len(flat) <= _EXCERPT_CHARS else flat[:_EXCERPT_CHARS] + "..."


@functools.lru_cache(maxsize=16)
def image_data_url(image: ImageInput) -> str:
    """The image as a ``data:`` URL, encoded once per process for each image: every question of a
    round sends the same picture (the game hands the same bytes object out for it, so a lookup
    hashes nothing new), and base64 of a photo costs a millisecond or more."""
    return f"data:{image.mime_type};base64,{base64.b64encode(image.data).decode('ascii')}"


def build_messages(
    image: ImageInput, messages: list[ChatMessage], system: str | None, *, system_in_user: bool = False
) -> list[dict[str, Any]]:
    """OpenAI chat messages: the system prompt if any, then the history; the image rides in turn one.

    ``system_in_user`` puts the system prompt at the head of the first user message, for servers
    whose chat template refuses a system role.
    """
    if not messages or messages[0].role != "user":
        raise ModelError("the conversation must start with a user message (it carries the image)")
    data_url = image_data_url(image)
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

    ``timeout`` bounds the whole request, from connecting to the last byte of the reply; ``transport``
    lets tests put an :class:`httpx.MockTransport` in place of the network.
    Call :meth:`load` at start-up to learn whether the server takes a system role before any player
    waits on it.
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
        self._http: httpx.Client | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"openai:{self.model}"

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    def load(self) -> None:
        """Probe once, with a one-token request, whether the server accepts a system message.

        Servers whose chat template refuses one answer HTTP 400; the prompt then rides at the head of
        the first user message on every request. Probing here, at start-up, spares the first answer a
        failed request and a retry. A server that cannot be reached yet is left to that fallback in
        :meth:`answer`, which treats every request alike.
        """
        body = {
            "model": self.model,
            "messages": _PROBE_MESSAGES,
            "temperature": 0,
            "max_tokens": 1,
            "stream": False,
        }
        try:
            response = self._post(body)
        except GapError as exc:
            log.warning("could not probe %s for system-role support: %s", self.url, exc)
            return
        if response.status_code == 400:
            log.info("%s refuses system messages: the prompt goes in the first user turn", self.url)
            self._system_in_user = True
        elif response.status_code >= 400:
            log.warning("%s answered the start-up probe with HTTP %s", self.url, response.status_code)

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
        response = self._post(self.request_body(image, messages, system))
        if response.status_code == 400 and system and not self._system_in_user:
            # Many templates refuse a system role (and load() could not tell yet). Fold the prompt into
            # the first user turn from now on; the game sends the same system prompt on every turn, so
            # this happens once, to whichever turn comes first.
            self._system_in_user = True
            response = self._post(self.request_body(image, messages, system))
        if response.status_code >= 400:
            raise ModelError(f"{self.url} answered HTTP {response.status_code}: {_excerpt(response.text)}")
        return _parse_content(self.url, response)

    def _client(self) -> httpx.Client:
        """One pooled client (and SSL context) for every answer: building one cost more than the
        rest of a question together."""
        if self._http is None:
            with self._lock:
                if self._http is None:
                    self._http = httpx.Client(
                        timeout=self.timeout,
                        transport=self.transport,
                        limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
                    )
        return self._http

    def ping(self) -> None:
        """Raise :class:`ModelError` unless the server answers HTTP at all (for readiness probes)."""
        with _map_httpx_errors(self.base_url, 5.0):
            self._client().get(self.base_url.rstrip("/") + "/models", timeout=min(self.timeout, 5.0))

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def _post(self, body: dict[str, Any]) -> httpx.Response:
        """POST ``body``; the whole exchange must end within ``timeout`` seconds, not each read.

        httpx times each read alone, so a server trickling a byte a second never timed out; the body
        is read chunk by chunk here against one deadline.
        """
        headers = {"Authorization": f"Bearer {self.api_key}"}
        deadline = time.monotonic() + self.timeout
        with (
            _map_httpx_errors(self.url, self.timeout),
            self._client().stream("POST", self.url, json=body, headers=headers) as response,
        ):
            chunks: list[bytes] = []
            for chunk in response.iter_bytes():
                if time.monotonic() > deadline:
                    raise ModelTimeout(f"no complete answer from {self.url} within {self.timeout:g} s")
                chunks.append(chunk)
            content_type = response.headers.get("content-type", "application/json")
            return httpx.Response(
                response.status_code, content=b"".join(chunks), headers={"content-type": content_type}
            )


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
