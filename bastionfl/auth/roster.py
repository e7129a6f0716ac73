"""Epoch rosters: the Home Authority certifies, once per (server, run, key epoch), the whole set of epoch
verification keys of the clients it admitted, so that clients can tell real members from the FL server's sybils.

A client endorses its fresh epoch verification key with a key only it and the HA hold (``endorsement_key``, derived
from the handshake's pre-key ``k_s``, which the FL server never sees); the FL server relays ``(handle, key epoch,
key, tag)`` to the HA, which checks the tag against the session behind the opaque handle and records one key per
client and roster. On request the HA signs the roster (Ed25519) and seals it: it never signs a second, different
roster under the same label, so the server cannot split the fleet into many small epochs under one name, and a
client refuses a roster below its own minimum size. The FL server learns the keys, never who holds them; a Home
Authority that colludes with the server can link keys to clients.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import AuthError, MalformedInput
from .primitives import encode_server_id, exp

__all__ = [
    "ROSTER_MAGIC",
    "VK_LEN",
    "endorsement_key",
    "endorse_epoch_key",
    "verify_endorsement",
    "roster_body",
    "SignedRoster",
]

ROSTER_MAGIC = b"BFRS"
_VERSION = 1
VK_LEN = 32  # Ed25519 public key
SIG_LEN = 64
MAX_MEMBERS = 100_000
_ENDORSE = b"bastionfl/auth/roster/endorse/v1\x00"
_SIGN = b"bastionfl/auth/roster/sign/v1\x00"


def endorsement_key(k_s: bytes, transcript: bytes) -> bytes:
    """The per-session key that endorses an epoch key: from ``k_s`` (client and HA only), never the session key."""
    return exp(k_s, b"roster" + transcript)


def _endorse_message(server_id: str, run_id: int, key_epoch: int, vk: bytes) -> bytes:
    if len(vk) != VK_LEN:
        raise MalformedInput("an epoch verification key is 32 bytes")
    if not 0 <= run_id < 1 << 64 or not 0 <= key_epoch < 1 << 64:
        raise MalformedInput("run id and key epoch are unsigned 64-bit integers")
    sid = encode_server_id(server_id)
    return _ENDORSE + struct.pack(">H", len(sid)) + sid + struct.pack(">QQ", run_id, key_epoch) + vk


def endorse_epoch_key(key: bytes, server_id: str, run_id: int, key_epoch: int, vk: bytes) -> bytes:
    """Client: the 32-byte tag that asks the HA to put ``vk`` into the roster of (server, run, key epoch)."""
    return hmac.new(key, _endorse_message(server_id, run_id, key_epoch, vk), hashlib.sha256).digest()


def verify_endorsement(key: bytes, server_id: str, run_id: int, key_epoch: int, vk: bytes, tag: bytes) -> bool:
    """HA: constant-time check of an endorsement tag."""
    expected = endorse_epoch_key(key, server_id, run_id, key_epoch, vk)
    return isinstance(tag, (bytes, bytearray)) and hmac.compare_digest(expected, bytes(tag))


def roster_body(server_id: str, run_id: int, key_epoch: int, vks: frozenset[bytes] | set[bytes]) -> bytes:
    """The signed bytes: magic, version, server id, run id, key epoch, member count, the sorted keys."""
    if not 1 <= len(vks) <= MAX_MEMBERS or any(len(v) != VK_LEN for v in vks):
        raise MalformedInput("a roster holds 1 to 100,000 keys of 32 bytes")
    sid = encode_server_id(server_id)
    head = ROSTER_MAGIC + bytes((_VERSION,)) + struct.pack(">H", len(sid)) + sid
    return head + struct.pack(">QQI", run_id, key_epoch, len(vks)) + b"".join(sorted(vks))


@dataclass(frozen=True)
class SignedRoster:
    """A roster and the HA's signature over it; ``verify`` is what a client runs before trusting any member."""

    server_id: str
    run_id: int
    key_epoch: int
    members: frozenset[bytes]
    signature: bytes

    @property
    def digest(self) -> bytes:
        """SHA-256 of the signed body: names this roster."""
        return hashlib.sha256(roster_body(self.server_id, self.run_id, self.key_epoch, self.members)).digest()

    @classmethod
    def sign(cls, key: Ed25519PrivateKey, server_id: str, run_id: int, key_epoch: int,
             members: frozenset[bytes]) -> "SignedRoster":
        """HA: sign a roster."""
        body = roster_body(server_id, run_id, key_epoch, members)
        return cls(server_id, run_id, key_epoch, frozenset(members), key.sign(_SIGN + body))

    def to_bytes(self) -> bytes:
        """Wire form: the signed body, then the 64-byte signature."""
        return roster_body(self.server_id, self.run_id, self.key_epoch, self.members) + self.signature

    @classmethod
    def from_bytes(cls, data: bytes) -> "SignedRoster":
        """Parse the wire form (``MalformedInput`` on any defect; the signature is checked by ``verify``)."""
        if not isinstance(data, (bytes, bytearray)):
            raise MalformedInput("a roster is bytes")
        data = bytes(data)
        if len(data) < 7 or data[:4] != ROSTER_MAGIC or data[4] != _VERSION:
            raise MalformedInput("not a version-1 BastionFL roster")
        (sid_len,) = struct.unpack(">H", data[5:7])
        pos = 7 + sid_len
        if len(data) < pos + 20:
            raise MalformedInput("roster is truncated")
        try:
            server_id = data[7:pos].decode()
        except UnicodeDecodeError:
            raise MalformedInput("roster server id is not UTF-8") from None
        run_id, key_epoch, count = struct.unpack(">QQI", data[pos:pos + 20])
        pos += 20
        if not 1 <= count <= MAX_MEMBERS or len(data) != pos + VK_LEN * count + SIG_LEN:
            raise MalformedInput("roster member count does not match its length")
        keys = [data[pos + i * VK_LEN: pos + (i + 1) * VK_LEN] for i in range(count)]
        if keys != sorted(set(keys)):
            raise MalformedInput("roster keys are not sorted and distinct")
        roster = cls(server_id, run_id, key_epoch, frozenset(keys), data[-SIG_LEN:])
        if roster.to_bytes() != data:
            raise MalformedInput("roster is not in canonical form")
        return roster

    def verify(self, ha_key: bytes, *, server_id: str, run_id: int, key_epoch: int, min_members: int,
               own_key: bytes | None = None) -> frozenset[bytes]:
        """The certified members, after every check a client needs; ``AuthError`` naming the first that fails."""
        try:
            Ed25519PublicKey.from_public_bytes(ha_key).verify(
                self.signature, _SIGN + roster_body(self.server_id, self.run_id, self.key_epoch, self.members))
        except (InvalidSignature, ValueError):
            raise AuthError("roster: the Home Authority's signature does not verify") from None
        if not (hmac.compare_digest(self.server_id.encode(), server_id.encode()) and self.run_id == run_id
                and self.key_epoch == key_epoch):
            raise AuthError("roster: made for another server, run or key epoch")
        if len(self.members) < min_members:
            raise AuthError(f"roster: {len(self.members)} members, fewer than the minimum {min_members}")
        if own_key is not None and own_key not in self.members:
            raise AuthError("roster: this client's own epoch key is not a member")
        return self.members
