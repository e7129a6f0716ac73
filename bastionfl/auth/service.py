"""The Home Authority as an HTTPS service (FastAPI + uvicorn) and the FL server's HTTP relay (httpx).

API (JSON, hex-encoded bytes; the caller's server id comes from its bearer token, never from the body):
``POST /v1/challenge {msg1, run_id, epoch, node_id, expiry}`` -> ``{sid, msg2, hxres}``;
``POST /v1/confirm {sid, res}`` -> ``{ok, session_key?, handle?}``; ``GET /v1/keys`` -> ``{kid: pk}``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import ssl
import threading
from collections.abc import Mapping

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from .errors import AuthError, MalformedInput, RateLimited
from .ha import HomeAuthority
from .messages import HANDLE_LEN, HXRES_LEN, MSG2_LEN, MSG3_LEN, SID_LEN
from .primitives import RoundContext
from .server import ChallengeReply, ConfirmReply

__all__ = [
    "HttpRelay",
    "create_app",
    "decode_challenge_request",
    "decode_confirm_request",
    "hash_token",
    "start_in_thread",
]

log = logging.getLogger("bastionfl.auth.service")
MAX_BODY = 4096


def hash_token(token: str) -> str:
    """SHA-256 hex of a server bearer token (the HA keeps only hashes)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _load(body: bytes) -> dict:
    if not isinstance(body, (bytes, bytearray)) or len(body) > MAX_BODY:
        raise MalformedInput("request body missing or too large")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise MalformedInput("request body is not JSON") from None
    if not isinstance(doc, dict):
        raise MalformedInput("request body must be a JSON object")
    return doc


def _hexfield(doc: Mapping, name: str, length: int | None = None) -> bytes:
    value = doc.get(name)
    if not isinstance(value, str) or len(value) > 2 * MAX_BODY:
        raise MalformedInput(f"field {name!r} must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise MalformedInput(f"field {name!r} must be a hex string") from None
    if length is not None and len(raw) != length:
        raise MalformedInput(f"field {name!r} has the wrong length")
    return raw


def _intfield(doc: Mapping, name: str) -> int:
    value = doc.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedInput(f"field {name!r} must be an integer")
    return value


def decode_challenge_request(body: bytes) -> tuple[RoundContext, bytes]:
    """Parse a ``/v1/challenge`` body into ``(ctx, msg1)``; msg1's length is left to the HA (decoy path)."""
    doc = _load(body)
    msg1 = _hexfield(doc, "msg1")
    ctx = RoundContext(*(_intfield(doc, k) for k in ("run_id", "epoch", "node_id", "expiry")))
    return ctx, msg1


def decode_confirm_request(body: bytes) -> tuple[bytes, bytes]:
    """Parse a ``/v1/confirm`` body into ``(sid, res)``."""
    doc = _load(body)
    return _hexfield(doc, "sid", SID_LEN), _hexfield(doc, "res", MSG3_LEN)


def create_app(ha: HomeAuthority, server_tokens: Mapping[str, str]) -> FastAPI:
    """FastAPI app serving ``ha``; ``server_tokens`` maps ``hash_token(token)`` to the server id it authenticates."""
    tokens = dict(server_tokens)
    lock = threading.Lock()
    app = FastAPI(title="BastionFL Home Authority", docs_url=None, redoc_url=None, openapi_url=None)

    def _server_id(request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return None
        return tokens.get(hash_token(auth[7:]))

    def _err(status: int, text: str) -> Response:
        return JSONResponse({"error": text}, status_code=status)

    @app.post("/v1/challenge")
    async def challenge(request: Request) -> Response:
        server_id = _server_id(request)
        if server_id is None:
            return _err(401, "unknown server")
        try:
            ctx, msg1 = decode_challenge_request(await request.body())
            with lock:
                reply = ha.challenge(server_id, ctx, msg1)
        except MalformedInput as exc:
            return _err(400, str(exc))
        except RateLimited:
            return _err(429, "rate limited")
        return JSONResponse({"sid": reply.sid.hex(), "msg2": reply.msg2.hex(), "hxres": reply.hxres.hex()})

    @app.post("/v1/confirm")
    async def confirm(request: Request) -> Response:
        server_id = _server_id(request)
        if server_id is None:
            return _err(401, "unknown server")
        try:
            sid, res = decode_confirm_request(await request.body())
            with lock:
                reply = ha.confirm(server_id, sid, res)
        except MalformedInput as exc:
            return _err(400, str(exc))
        if not reply.ok:
            return JSONResponse({"ok": False})
        assert reply.session_key is not None and reply.handle is not None
        return JSONResponse({"ok": True, "session_key": reply.session_key.hex(), "handle": reply.handle.hex()})

    @app.get("/v1/keys")
    async def keys() -> Response:
        with lock:
            pks = ha.public_keys()
        return JSONResponse({str(kid): pk.hex() for kid, pk in pks.items()})

    @app.get("/healthz")
    async def healthz() -> Response:
        return JSONResponse({"ok": True})

    return app


class HttpRelay:
    """:class:`~.server.HARelay` over HTTPS: the FL server's side of the S <-> HA channel (bearer token + TLS)."""

    def __init__(self, base_url: str, token: str, *, verify: str | ssl.SSLContext | bool = True,
                 timeout: float = 10.0) -> None:
        if not base_url.startswith("https://"):
            raise MalformedInput("the HA must be reached over https://")
        if isinstance(verify, (str, os.PathLike)):
            verify = ssl.create_default_context(cafile=os.fspath(verify))
        self._client = httpx.Client(
            base_url=base_url, verify=verify, timeout=timeout, headers={"authorization": f"Bearer {token}"}
        )

    def __repr__(self) -> str:
        return f"HttpRelay({str(self._client.base_url)!r}, token=<secret>)"

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def _post(self, path: str, doc: dict) -> dict:
        try:
            resp = self._client.post(path, content=json.dumps(doc).encode(),
                                     headers={"content-type": "application/json"})
        except httpx.HTTPError:
            raise AuthError("Home Authority unreachable") from None
        if resp.status_code == 429:
            raise RateLimited("Home Authority quota exhausted")
        if resp.status_code != 200:
            raise AuthError(f"Home Authority refused the request (HTTP {resp.status_code})")
        try:
            out = resp.json()
        except ValueError:
            raise AuthError("Home Authority sent a malformed answer") from None
        if not isinstance(out, dict):
            raise AuthError("Home Authority sent a malformed answer")
        return out

    def challenge(self, ctx: RoundContext, msg1: bytes) -> ChallengeReply:
        """POST /v1/challenge."""
        out = self._post("/v1/challenge", {
            "msg1": bytes(msg1).hex(), "run_id": ctx.run_id, "epoch": ctx.epoch, "node_id": ctx.node_id,
            "expiry": ctx.expiry,
        })
        try:
            return ChallengeReply(_hexfield(out, "sid", SID_LEN), _hexfield(out, "msg2", MSG2_LEN),
                                  _hexfield(out, "hxres", HXRES_LEN))
        except MalformedInput:
            raise AuthError("Home Authority sent a malformed answer") from None

    def confirm(self, sid: bytes, res: bytes) -> ConfirmReply:
        """POST /v1/confirm."""
        out = self._post("/v1/confirm", {"sid": bytes(sid).hex(), "res": bytes(res).hex()})
        if out.get("ok") is not True:
            return ConfirmReply(False)
        try:
            return ConfirmReply(True, _hexfield(out, "session_key", 32), _hexfield(out, "handle", HANDLE_LEN))
        except MalformedInput:
            raise AuthError("Home Authority sent a malformed answer") from None


def start_in_thread(app, *, host: str, port: int, certfile: str | os.PathLike[str],
                    keyfile: str | os.PathLike[str], log_level: str = "warning"):
    """Run ``app`` under uvicorn with TLS in a daemon thread; returns ``(server, thread, port)``; stop with
    ``server.should_exit = True; thread.join()``. Port 0 picks an ephemeral port."""
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(app, ssl_certfile=str(certfile), ssl_keyfile=str(keyfile), log_level=log_level,
                            lifespan="off", ws="none")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    import time

    for _ in range(500):
        if server.started or not thread.is_alive():
            break
        time.sleep(0.01)
    if not server.started:
        server.should_exit = True
        sock.close()
        raise AuthError("the Home Authority service failed to start")
    return server, thread, sock.getsockname()[1]
