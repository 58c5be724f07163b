"""ASGI middleware at the edge of every request: body size limits, and text no database refuses.

PostgreSQL refuses NUL characters in text and UTF-8 cannot encode lone surrogates; either one in a
question, a name, a correction or an id used to reach the database as a 500 (and a dropped
connection). They are refused here, once, for every route, before any handler or query runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gap._text import text_problem

# a JSON escape \u0000, or one of a surrogate (checked further only when present), not itself escaped
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_FORM_NUL = re.compile(rb"%00")


class BodyTooLarge(Exception):
    """The request body passed its limit while being read."""


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def body_problem(body: bytes, content_type: str) -> str | None:
    """Why a JSON or form body carries text GAP cannot store, or None; other bodies are not read."""
    if content_type.startswith("application/json"):
        if b"\x00" in body or _NUL_ESCAPE.search(body):
            return "contains a NUL character (\\u0000)"
        if _SURROGATE_ESCAPE.search(body):  # rare: only then parse, since a pair is fine
            try:
                parsed = json.loads(body)
            except ValueError:
                return None  # the route answers its own 422 for JSON it cannot parse
            return next((p for s in _strings(parsed) if (p := text_problem(s))), None)
    elif content_type.startswith("application/x-www-form-urlencoded") and (
        b"\x00" in body or _FORM_NUL.search(body)
    ):
        return "contains a NUL character (%00)"
    return None


class EdgeGuard:
    """413 for a body over its limit (uploads get a larger one); 422 for NUL or a lone surrogate.

    JSON and form bodies are small (``max_body_bytes``), so they are buffered and checked, then
    replayed to the app; multipart uploads stream through, counted against ``max_upload_bytes``.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or _FORM_NUL.search(scope.get("query_string", b"")):
            await _refuse(send, 422, "the URL contains a NUL character (%00)")
            return
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"").decode("latin-1").lower()
        upload = content_type.startswith("multipart/")
        limit = self.max_upload_bytes if upload else self.max_body_bytes
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _refuse(send, 413, f"the request body is larger than {limit} bytes")
            return
        if upload:
            await self._stream(scope, receive, send, limit)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                await _refuse(send, 413, f"the request body is larger than {limit} bytes")
                return
        problem = body_problem(bytes(body), content_type)
        if problem is not None:
            await _refuse(send, 422, f"the request body {problem}, which GAP does not accept")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for the client's disconnect
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def _stream(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if not started:
                await _refuse(send, 413, f"the request body is larger than {limit} bytes")


async def _refuse(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
