"""The Home Authority as an HTTPS service (FastAPI + uvicorn); the FL server's client is ``bastionfl.auth.HttpRelay``.

API (JSON, hex-encoded bytes; the caller's server id comes from its bearer token, never from the body):
``POST /v1/challenge {msg1, run_id, epoch, node_id, expiry}`` -> ``{sid, msg2, hxres}``;
``POST /v1/confirm {sid, res}`` -> ``{ok, session_key?, handle?}``; ``GET /v1/keys`` -> ``{kid: pk}``;
``POST /v1/epoch-key {handle, key_epoch, vk, tag}`` -> ``{ok}``; ``POST /v1/roster {run_id, key_epoch}`` ->
``{roster}`` (the signed roster of that key epoch, hex); ``GET /metrics`` (bearer token) -> Prometheus text
(challenges, decoys, clone alerts, table sizes).

Every POST must be ``application/json`` (415), at most ``MAX_BODY`` bytes, enforced while the body streams in
(413, ``ha_guard.BodyGuard``), and nested at most ``MAX_DEPTH`` deep (400).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from bastionfl.auth.errors import AuthError, MalformedInput, RateLimited
from bastionfl.auth.ha import HomeAuthority
from bastionfl.auth.messages import HANDLE_LEN, MSG3_LEN, SID_LEN
from bastionfl.auth.primitives import RoundContext
from bastionfl.auth.wirejson import MAX_BODY
from bastionfl.auth.wirejson import hexfield as _hexfield, intfield as _intfield, load_json_object as _load
from bastionfl.deploy.ha_guard import SHUTDOWN_TIMEOUT_S, BodyGuard

__all__ = [
    "create_app",
    "decode_challenge_request",
    "decode_confirm_request",
    "hash_token",
    "start_in_thread",
]

log = logging.getLogger("bastionfl.deploy.ha_service")


def hash_token(token: str) -> str:
    """SHA-256 hex of a server bearer token (the HA keeps only hashes)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


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


def create_app(ha: HomeAuthority, server_tokens: Mapping[str, str]) -> BodyGuard:
    """The HA service as an ASGI app (FastAPI behind the body guard); ``server_tokens`` maps ``hash_token(token)``
    to the server id it authenticates."""
    return BodyGuard(_create_api(ha, server_tokens), MAX_BODY)


def _create_api(ha: HomeAuthority, server_tokens: Mapping[str, str]) -> FastAPI:
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

    @app.post("/v1/epoch-key")
    async def epoch_key(request: Request) -> Response:
        server_id = _server_id(request)
        if server_id is None:
            return _err(401, "unknown server")
        try:
            doc = _load(await request.body())
            handle = _hexfield(doc, "handle", HANDLE_LEN)
            vk, tag = _hexfield(doc, "vk", 32), _hexfield(doc, "tag", 32)
            with lock:
                ok = ha.register_epoch_key(server_id, handle, _intfield(doc, "key_epoch"), vk, tag)
        except MalformedInput as exc:
            return _err(400, str(exc))
        except AuthError as exc:
            return _err(429, str(exc))
        return JSONResponse({"ok": ok})

    @app.post("/v1/roster")
    async def roster(request: Request) -> Response:
        server_id = _server_id(request)
        if server_id is None:
            return _err(401, "unknown server")
        try:
            doc = _load(await request.body())
            with lock:
                signed = ha.sign_roster(server_id, _intfield(doc, "run_id"), _intfield(doc, "key_epoch"))
        except MalformedInput as exc:
            return _err(400, str(exc))
        except AuthError as exc:
            return _err(409, str(exc))
        return JSONResponse({"roster": signed.to_bytes().hex()})

    @app.get("/v1/keys")
    async def keys() -> Response:
        with lock:
            pks = ha.public_keys()
        return JSONResponse({str(kid): pk.hex() for kid, pk in pks.items()})

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        if _server_id(request) is None:
            return _err(401, "unknown server")
        with lock:
            store = ha.store
            values = {"challenges_total": store.counter("challenges"), "decoys_total": store.counter("decoys"),
                      "clone_alerts_total": store.counter("clone_alerts"),
                      "session_handles": store.table_size("handles"), "pseudonyms": store.table_size("pids")}
        text = "".join(f"bastionfl_ha_{k} {v}\n" for k, v in values.items())
        return Response(text, media_type="text/plain; version=0.0.4")

    @app.get("/healthz")
    async def healthz() -> Response:
        return JSONResponse({"ok": True})

    return app


def start_in_thread(app: object, *, host: str, port: int, certfile: str | os.PathLike[str],
                    keyfile: str | os.PathLike[str], log_level: str = "warning"):
    """Run ``app`` under uvicorn with TLS in a daemon thread; returns ``(server, thread, port)``; stop with
    ``server.should_exit = True; thread.join()``. Port 0 picks an ephemeral port."""
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(app, ssl_certfile=str(certfile), ssl_keyfile=str(keyfile), log_level=log_level,
                            lifespan="off", ws="none", timeout_graceful_shutdown=SHUTDOWN_TIMEOUT_S)
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
