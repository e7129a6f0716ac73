"""The FL server's side of the server <-> Home Authority channel over HTTPS (httpx, bearer token + TLS).

The service it talks to is ``bastionfl.deploy.ha_service``; both ends share the JSON encoding in ``wirejson``.
"""

from __future__ import annotations

import json
import os
import ssl

import httpx

from .errors import AuthError, MalformedInput, RateLimited
from .messages import HANDLE_LEN, HXRES_LEN, MSG2_LEN, SID_LEN
from .primitives import RoundContext
from .server import ChallengeReply, ConfirmReply
from .wirejson import hexfield as _hexfield

__all__ = ["HttpRelay"]


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

    def register_epoch_key(self, handle: bytes, key_epoch: int, vk: bytes, tag: bytes) -> bool:
        """POST /v1/epoch-key: an admitted client's endorsed epoch key."""
        out = self._post("/v1/epoch-key", {"handle": bytes(handle).hex(), "key_epoch": key_epoch,
                                           "vk": bytes(vk).hex(), "tag": bytes(tag).hex()})
        return out.get("ok") is True

    def sign_roster(self, run_id: int, key_epoch: int) -> bytes:
        """POST /v1/roster: the signed roster of ``key_epoch`` (wire bytes; the client verifies it)."""
        out = self._post("/v1/roster", {"run_id": run_id, "key_epoch": key_epoch})
        try:
            return _hexfield(out, "roster")
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
