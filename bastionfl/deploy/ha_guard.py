"""An ASGI guard in front of the Home Authority service: POST bodies must be JSON and small, checked while they
stream in, so no request can make the service buffer more than ``limit`` bytes.

Attacker: anyone who reaches the HA's port (with or without a token). A wrong content type gets 415 before any
body byte is read; a body over the limit gets 413 as soon as the declared length or the bytes read so far pass it.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

__all__ = ["BodyGuard", "SHUTDOWN_TIMEOUT_S"]

SHUTDOWN_TIMEOUT_S = 5.0  # a held connection delays a SIGTERM'd ``ha serve`` at most this long

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def _reject(send: Send, status: int, text: str) -> None:
    body = json.dumps({"error": text}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodyGuard:
    """Wraps an ASGI app: 415 for a POST that is not ``application/json``, 413 for a body over ``limit`` bytes."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if media != b"application/json":
            await _reject(send, 415, "content type must be application/json")
            return
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _reject(send, 413, "request body too large")
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = bool(message.get("more_body", False))
            if len(body) > self.limit:  # stop reading: the rest of the body is never buffered
                await _reject(send, 413, "request body too large")
                return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
