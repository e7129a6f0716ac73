"""FL-server side: relay msg1 to the Home Authority, check HXRES, confirm, key-confirm; never sees an identity."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .errors import AuthError, MalformedInput
from .messages import (
    ACK_LEN,
    HANDLE_LEN,
    HXRES_LEN,
    MSG1_LEN,
    MSG2_LEN,
    MSG3_LEN,
    MSG4_LEN,
    SID_LEN,
    ack,
    hxres_of,
    sconf,
    transcript_hash,
)
from .primitives import RoundContext, ct_equal, encode_server_id, random_bytes
from .session import Session

__all__ = ["AuthServer", "ChallengeReply", "ConfirmReply", "HARelay", "ServerHandshake"]


@dataclass(frozen=True, slots=True, repr=False)
class ChallengeReply:
    """HA answer to a challenge request: opaque session id, msg2 for the client, HXRES for the server."""

    sid: bytes
    msg2: bytes
    hxres: bytes

    def __post_init__(self) -> None:
        if (len(self.sid), len(self.msg2), len(self.hxres)) != (SID_LEN, MSG2_LEN, HXRES_LEN):
            raise MalformedInput("challenge reply has wrong field sizes")

    def __repr__(self) -> str:
        return "ChallengeReply(...)"


@dataclass(frozen=True, slots=True, repr=False)
class ConfirmReply:
    """HA answer to a confirm request: ``ok`` with the session key and an opaque handle, or ``ok=False``."""

    ok: bool
    session_key: bytes | None = None
    handle: bytes | None = None

    def __post_init__(self) -> None:
        if self.ok and (
            self.session_key is None or len(self.session_key) != 32 or self.handle is None
            or len(self.handle) != HANDLE_LEN
        ):
            raise MalformedInput("confirm reply has wrong field sizes")

    def __repr__(self) -> str:
        return f"ConfirmReply(ok={self.ok})"


class HARelay(Protocol):
    """How an FL server reaches its Home Authority: in-process (:class:`~.ha.LocalRelay`) or HTTPS (``HttpRelay``).

    The relay is bound to one server identity by its channel; it raises :class:`AuthError` when the HA is
    unreachable or refuses the server (rate limit), and otherwise returns the HA's uniform answers.
    """

    def challenge(self, ctx: RoundContext, msg1: bytes) -> ChallengeReply: ...

    def confirm(self, sid: bytes, res: bytes) -> ConfirmReply: ...

    def register_epoch_key(self, handle: bytes, key_epoch: int, vk: bytes, tag: bytes) -> bool: ...

    def sign_roster(self, run_id: int, key_epoch: int) -> bytes: ...


class ServerHandshake:
    """One node's handshake at the FL server: :meth:`challenge` -> :meth:`confirm` -> :meth:`accept`."""

    def __init__(self, server: AuthServer, ctx: RoundContext) -> None:
        self._server = server
        self.ctx = ctx
        self._state = "new"
        self._sid = self._msg1 = self._msg2 = self._hxres = b""
        self._k: bytes | None = None
        self._handle: bytes | None = None
        self._th = b""

    def __repr__(self) -> str:
        return f"ServerHandshake(epoch={self.ctx.epoch}, state={self._state!r})"

    def challenge(self, msg1: bytes) -> bytes:
        """Relay msg1 to the HA and return msg2 (80 B); a wrongly sized msg1 gets a local random msg2."""
        if self._state != "new":
            raise AuthError("handshake already started")
        self._state = "failed"
        if not isinstance(msg1, (bytes, bytearray)) or len(msg1) != self._server.msg1_len:
            return random_bytes(MSG2_LEN)
        reply = self._server.relay.challenge(self.ctx, bytes(msg1))
        self._sid, self._msg1, self._msg2, self._hxres = reply.sid, bytes(msg1), reply.msg2, reply.hxres
        self._state = "challenged"
        return reply.msg2

    def confirm(self, msg3: bytes) -> bytes:
        """Check HXRES locally (no HA call on mismatch), confirm at the HA, return SCONF or 32 random bytes."""
        state, self._state = self._state, "failed"
        if state != "challenged" or not isinstance(msg3, (bytes, bytearray)) or len(msg3) != MSG3_LEN:
            return random_bytes(MSG4_LEN)
        msg3 = bytes(msg3)
        if not ct_equal(hxres_of(self._msg2[:16], msg3), self._hxres):
            return random_bytes(MSG4_LEN)
        reply = self._server.relay.confirm(self._sid, msg3)
        if not reply.ok:
            return random_bytes(MSG4_LEN)
        self._th = transcript_hash(self._server.server_id_bytes, self.ctx.digest(), self._msg1, self._msg2, msg3)
        self._k, self._handle = reply.session_key, reply.handle
        self._state = "confirmed"
        return sconf(self._k, self._th)

    def accept(self, ack_msg: bytes) -> Session | None:
        """Verify the client's ACK; returns the live :class:`Session` or ``None`` (drop the node this round)."""
        state, self._state = self._state, "done"
        if state != "confirmed" or not isinstance(ack_msg, (bytes, bytearray)) or len(ack_msg) != ACK_LEN:
            return None
        assert self._k is not None
        if not ct_equal(ack(self._k, self._th), bytes(ack_msg)):
            return None
        return Session(key=self._k, server_id=self._server.server_id, ctx=self.ctx, role="server",
                       handle=self._handle)


class AuthServer:
    """The FL server's admission front: one per server identity, sharing one :class:`HARelay`."""

    def __init__(self, server_id: str, relay: HARelay, *, clock: Callable[[], float] = time.time,
                 msg1_len: int = MSG1_LEN) -> None:
        self.msg1_len = msg1_len  # 66 for the variable k-pseudonym profile
        self.server_id = server_id
        self.server_id_bytes = encode_server_id(server_id)
        self.relay = relay
        self._clock = clock

    def __repr__(self) -> str:
        return f"AuthServer(server_id={self.server_id!r})"

    def round_context(self, run_id: int, epoch: int, node_id: int, ttl_s: int = 120) -> RoundContext:
        """Context for one node in one round; ``expiry`` is ``now + ttl_s`` (what msg0 carries)."""
        return RoundContext(run_id, epoch, node_id, int(self._clock()) + ttl_s)

    def begin(self, ctx: RoundContext) -> ServerHandshake:
        """Start a handshake for one node of one round."""
        return ServerHandshake(self, ctx)


