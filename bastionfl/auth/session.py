"""Session keys and per-message tags within a round (design section 10.3)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import MalformedInput
from .primitives import PREFIX, RoundContext, ct_equal, h, lp, mac, u64

__all__ = [
    "CLIENT_TO_SERVER",
    "SERVER_TO_CLIENT",
    "Session",
    "digest_records",
    "mac_message",
    "verify_message",
]

SERVER_TO_CLIENT = 0x01
CLIENT_TO_SERVER = 0x02
TAG_LEN = 32


def _check_direction(direction: int) -> None:
    if direction not in (SERVER_TO_CLIENT, CLIENT_TO_SERVER):
        raise MalformedInput("direction must be SERVER_TO_CLIENT or CLIENT_TO_SERVER")


def mac_message(
    session_key: bytes, *, direction: int, run_id: int, round: int, message_type: str, seq: int, digest: bytes
) -> bytes:
    """Tag one FL message: ``MAC(K_S, "flvsp1 msg" || dir || LP(run) || LP(round) || LP(type) || seq || digest)``."""
    _check_direction(direction)
    if len(session_key) != 32 or len(digest) != 32:
        raise MalformedInput("session key and digest must be 32 bytes")
    data = (
        PREFIX
        + b"msg"
        + bytes((direction,))
        + lp(str(int(run_id)).encode())
        + lp(str(int(round)).encode())
        + lp(message_type.encode("utf-8"))
        + u64(seq)
        + digest
    )
    return mac(session_key, data)


def verify_message(
    session_key: bytes,
    tag: bytes,
    *,
    direction: int,
    run_id: int,
    round: int,
    message_type: str,
    seq: int,
    digest: bytes,
) -> bool:
    """Constant-time check of a :func:`mac_message` tag; ``False`` (never an exception) for a malformed tag."""
    if not isinstance(tag, (bytes, bytearray)) or len(tag) != TAG_LEN:
        return False
    try:
        expected = mac_message(
            session_key, direction=direction, run_id=run_id, round=round, message_type=message_type, seq=seq,
            digest=digest,
        )
    except (MalformedInput, ValueError, TypeError):
        return False
    return ct_equal(expected, bytes(tag))


def digest_records(items: Mapping[str, bytes]) -> bytes:
    """Canonical SHA-256 of named byte values: names sorted, each ``LP(name) || u64(len) || value``."""
    parts = [PREFIX + b"records"]
    for name in sorted(items):
        value = items[name]
        if not isinstance(name, str) or not isinstance(value, (bytes, bytearray)):
            raise MalformedInput("records must map str to bytes")
        parts.append(lp(name.encode("utf-8")) + u64(len(value)) + bytes(value))
    return h(b"".join(parts))


@dataclass(slots=True, repr=False, eq=False)
class Session:
    """A live session for one round: the key (never shown), its round context and per-direction counters."""

    key: bytes
    server_id: str
    ctx: RoundContext
    role: str  # "client" or "server"
    handle: bytes | None = None
    _sent: int = field(default=0)
    _received: int = field(default=-1)
    endorse_key: bytes | None = field(default=None, repr=False)  # client only: endorses its epoch keys to the HA

    def __repr__(self) -> str:
        return f"Session(role={self.role!r}, server_id={self.server_id!r}, epoch={self.ctx.epoch}, key=<secret>)"

    def _dirs(self) -> tuple[int, int]:
        out = SERVER_TO_CLIENT if self.role == "server" else CLIENT_TO_SERVER
        return out, SERVER_TO_CLIENT + CLIENT_TO_SERVER - out

    def seal(self, message_type: str, digest: bytes) -> tuple[int, bytes]:
        """Tag an outgoing message of this round; returns ``(seq, tag)`` with ``seq`` strictly increasing."""
        out, _ = self._dirs()
        seq = self._sent
        self._sent += 1
        tag = mac_message(
            self.key, direction=out, run_id=self.ctx.run_id, round=self.ctx.epoch, message_type=message_type,
            seq=seq, digest=digest,
        )
        return seq, tag

    def check(self, message_type: str, seq: int, digest: bytes, tag: bytes) -> bool:
        """Verify an incoming message of this round; rejects bad tags and replayed or old sequence numbers."""
        _, inc = self._dirs()
        if isinstance(seq, bool) or not isinstance(seq, int) or seq <= self._received or seq >= 1 << 64:
            return False
        ok = verify_message(
            self.key, tag, direction=inc, run_id=self.ctx.run_id, round=self.ctx.epoch, message_type=message_type,
            seq=seq, digest=digest,
        )
        if ok:
            self._received = seq
        return ok
