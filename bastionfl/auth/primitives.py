"""FL-VSP-AKA primitives and exact encodings (design section 3), all from `cryptography` or the stdlib.

Nothing here is a new primitive: HKDF, X25519 and AES-GCM come from `cryptography`, HMAC/SHA-256 from the stdlib;
this module only fixes the encodings (labels, length prefixes) so that every party computes the same bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .errors import MalformedInput

__all__ = [
    "PREFIX",
    "RoundContext",
    "ct_equal",
    "exp",
    "gcm_open",
    "gcm_seal",
    "h",
    "hkdf",
    "lp",
    "mac",
    "random_bytes",
    "u64",
    "x25519_public",
]

PREFIX = b"flvsp1 "
_ZERO_NONCE = bytes(12)
_U64 = struct.Struct(">Q")


def random_bytes(n: int) -> bytes:
    """Return ``n`` bytes from the OS CSPRNG."""
    return os.urandom(n)


def lp(data: bytes) -> bytes:
    """Length-prefix ``data`` with a 2-byte big-endian length (design: ``LP``)."""
    if len(data) > 0xFFFF:
        raise MalformedInput("field longer than 65535 bytes")
    return len(data).to_bytes(2, "big") + data


def u64(value: int) -> bytes:
    """Encode an unsigned 64-bit big-endian integer."""
    if not 0 <= value < 1 << 64:
        raise MalformedInput("counter out of the u64 range")
    return _U64.pack(value)


def h(data: bytes) -> bytes:
    """SHA-256."""
    return hashlib.sha256(data).digest()


def mac(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA-256 (32 bytes)."""
    return hmac.digest(key, data, "sha256")


def ct_equal(a: bytes, b: bytes) -> bool:
    """Constant-time byte comparison (``hmac.compare_digest``)."""
    return hmac.compare_digest(a, b)


def hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    """RFC 5869 HKDF-SHA256 with a 32-byte output."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def exp(prk: bytes, label: bytes) -> bytes:
    """HKDF-Expand-SHA256 of ``prk`` with info ``"flvsp1 " || label`` (design: ``Exp``), 32 bytes."""
    return HKDFExpand(algorithm=hashes.SHA256(), length=32, info=PREFIX + label).derive(prk)


def gcm_seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM with the all-zero nonce; only for single-use keys, as every key of this protocol is."""
    return AESGCM(key).encrypt(_ZERO_NONCE, plaintext, aad)


def gcm_open(key: bytes, ciphertext: bytes, aad: bytes) -> bytes | None:
    """Open :func:`gcm_seal` output; ``None`` on any authentication failure (no exception to leak)."""
    try:
        return AESGCM(key).decrypt(_ZERO_NONCE, ciphertext, aad)
    except Exception:  # InvalidTag, or a malformed length: one failure type for callers
        return None


def x25519_public(private: X25519PrivateKey) -> bytes:
    """Raw 32-byte public key of an X25519 private key."""
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def x25519_shared(private: X25519PrivateKey, peer_public: bytes) -> bytes | None:
    """X25519 shared secret, or ``None`` for a malformed or low-order peer key (which `cryptography` rejects)."""
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except Exception:
        return None


def _int_field(value: int, name: str) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedInput(f"{name} must be a non-negative integer")
    return str(value).encode("ascii")


@dataclass(frozen=True, slots=True)
class RoundContext:
    """The round a handshake is bound to: Flower run, epoch (round), the node's own id and an expiry (unix s)."""

    run_id: int
    epoch: int
    node_id: int
    expiry: int

    def __post_init__(self) -> None:
        for name in ("run_id", "epoch", "node_id", "expiry"):
            _int_field(getattr(self, name), name)
            if getattr(self, name) >= 1 << 64:
                raise MalformedInput(f"{name} must fit in 64 bits")

    def digest(self) -> bytes:
        """``ctx = H("flvsp1 ctx" || LP(run_id) || LP(epoch) || LP(node_id) || LP(expiry))``, decimal ASCII ints."""
        return h(
            PREFIX
            + b"ctx"
            + lp(str(self.run_id).encode())
            + lp(str(self.epoch).encode())
            + lp(str(self.node_id).encode())
            + lp(str(self.expiry).encode())
        )


def encode_server_id(server_id: str) -> bytes:
    """UTF-8 bytes of a server id; rejects empty or over-long ids."""
    if not isinstance(server_id, str) or not server_id:
        raise MalformedInput("server_id must be a non-empty string")
    raw = server_id.encode("utf-8")
    if len(raw) > 255:
        raise MalformedInput("server_id longer than 255 bytes")
    return raw
