"""Client state machine: msg1 -> (msg2) -> msg3 -> (msg4) -> ACK, with write-ahead persistence."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .credential import ClientCredential
from .errors import MalformedInput
from .messages import (
    ACK_LEN,
    MODE_FAST,
    MODE_RECOVERY,
    MSG1_LEN,
    MSG3_LEN,
    VERSION,
    ack,
    build_msg1,
    open_challenge,
    parse_msg2,
    sconf,
    session_key,
    transcript_hash,
)
from .primitives import RoundContext, ct_equal, encode_server_id, random_bytes
from .roster import endorsement_key
from .session import Session

__all__ = ["AuthClient", "ClientOutcome", "CredentialStore"]

MAX_EXPIRY_AHEAD_S = 24 * 3600


class CredentialStore(Protocol):
    """Where a client's credential lives: :class:`~.credential.FileCredentialStore` or the in-memory one."""

    def locked(self) -> AbstractContextManager[None]: ...

    def load(self) -> ClientCredential: ...

    def save(self, credential: ClientCredential) -> None: ...


@dataclass(frozen=True, slots=True, repr=False)
class ClientOutcome:
    """Result of :meth:`AuthClient.finish`: the ACK to send (always 32 bytes) and the session, or ``None``."""

    ack: bytes
    session: Session | None

    def __repr__(self) -> str:
        return f"ClientOutcome(ok={self.session is not None})"


class AuthClient:
    """One client's side of FL-VSP-AKA; every failure looks like success on the wire (random bytes, right size)."""

    def __init__(self, store: CredentialStore, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._reset()

    def __repr__(self) -> str:
        return f"AuthClient(state={self._state!r})"

    def _reset(self) -> None:
        self._state = "idle"
        self._msg1 = self._msg2 = self._msg3 = b""
        self._nc = self._key = self._k_s = b""
        self._server_id = ""
        self._sid_b = self._ctx_d = b""
        self._ctx: RoundContext | None = None

    def start(self, server_id: str, ctx: RoundContext) -> bytes:
        """Build msg1 (114 B) for ``server_id`` (from local config) and ``ctx``; persists ``ctr`` before returning.

        Raises :class:`MalformedInput` only for local misuse (a server not in the credential); an expired or
        far-future round from the network yields a well-formed msg1 whose handshake will simply fail.
        """
        sid_b = encode_server_id(server_id)
        if not isinstance(ctx, RoundContext):
            raise MalformedInput("ctx must be a RoundContext")
        self._reset()
        now = self._clock()
        with self._store.locked():
            cred = self._store.load()
            if server_id not in cred.servers:
                raise MalformedInput("server_id is not allowed by this credential")
            if not now < ctx.expiry <= now + MAX_EXPIRY_AHEAD_S:
                self._state = "failed"
                self._msg1 = bytes((VERSION, cred.kid)) + random_bytes(MSG1_LEN - 2)
                return self._msg1
            cred.ctr += 1
            if cred.pid is not None and not cred.pid_burned:
                pid, mode, cid_field = cred.pid, MODE_FAST, bytes(16)
                cred.pid_burned = True
            else:
                pid, mode, cid_field = random_bytes(16), MODE_RECOVERY, cred.cid
            self._store.save(cred)  # write-ahead: counter and burned pid hit the disk before msg1 leaves
        nc = random_bytes(16)
        ctx_d = ctx.digest()
        msg1 = build_msg1(
            kid=cred.kid, pk_ha=cred.ha_public_key, pid=pid, nc=nc, esk=X25519PrivateKey.generate(), mode=mode,
            cid_field=cid_field, ctr=cred.ctr, server_id=sid_b, ctx=ctx_d,
        )
        self._state, self._msg1, self._nc, self._key = "sent1", msg1, nc, cred.key
        self._server_id, self._sid_b, self._ctx, self._ctx_d = server_id, sid_b, ctx, ctx_d
        return msg1

    def respond(self, msg2: bytes) -> bytes:
        """Answer msg2 with RES (32 B), or with 32 random bytes on any failure; stores ``P_next`` first."""
        if self._state != "sent1":
            self._state = "failed"
            return random_bytes(MSG3_LEN)
        try:
            parsed = parse_msg2(msg2)
        except MalformedInput:
            parsed = None
        secrets = None
        if parsed is not None:
            secrets = open_challenge(self._key, self._msg1, self._nc, parsed, self._sid_b, self._ctx_d)
        if secrets is None:
            self._state = "failed"
            return random_bytes(MSG3_LEN)
        with self._store.locked():
            cred = self._store.load()
            cred.pid, cred.pid_burned = secrets.p_next, False
            self._store.save(cred)  # persist the new pseudonym before proving its receipt
        self._state, self._msg2, self._msg3, self._k_s = "sent3", secrets.msg2, secrets.xres, secrets.k_s
        return secrets.xres

    def finish(self, msg4: bytes) -> ClientOutcome:
        """Check SCONF; return the ACK (random on failure) and the live :class:`Session` or ``None``."""
        session = None
        if self._state == "sent3" and isinstance(msg4, (bytes, bytearray)) and len(msg4) == 32:
            th = transcript_hash(self._sid_b, self._ctx_d, self._msg1, self._msg2, self._msg3)
            k_session = session_key(self._k_s, th)
            if ct_equal(sconf(k_session, th), bytes(msg4)):
                assert self._ctx is not None
                session = Session(key=k_session, server_id=self._server_id, ctx=self._ctx, role="client",
                                  endorse_key=endorsement_key(self._k_s, th))
                reply = ack(k_session, th)
        if session is None:
            reply = random_bytes(ACK_LEN)
        self._reset()
        return ClientOutcome(reply, session)
