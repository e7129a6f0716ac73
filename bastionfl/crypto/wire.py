"""Envelope of every object that crosses the network: magic, version, kind, parameter fingerprint, length, SHA-256.

Layout: ``b"BFXM" | version u8 | kind u8 | fingerprint 16B | body length u64 LE | body | SHA-256(all before)``.
Polynomials travel as raw little-endian uint64 RNS coefficients of a shape fixed by the parameters and the message;
SEAL never parses bytes from the network (``sealraw`` builds its blobs from coefficients checked to lie below their
primes). Every failure is a ``CryptoFormatError``.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Sequence
from enum import IntEnum

import numpy as np

from .errors import CryptoFormatError
from .params import Params

MAGIC = b"BFXM"
VERSION = 2
_PREFIX = struct.Struct("<4sBB16sQ")
_DIGEST = 32
MAX_BODY = 1 << 34  # 16 GiB: refuses absurd length fields before any allocation


class Kind(IntEnum):
    """What an envelope holds; a payload of one kind is never accepted as another."""

    CRS_SEED = 1
    PUBLIC_SHARE = 2
    AGGREGATED_KEY = 3
    ENCRYPTED_VECTOR = 4
    AGGREGATE = 5
    DECRYPTION_REQUEST = 6
    DECRYPTION_SHARE = 7
    LOCAL_KEY_STATE = 8  # a client's own key share, for its own storage only: never sent
    EPOCH_OPENING = 9
    KEY_SETUP_REPLY = 10
    EPOCH_PROPOSAL = 11
    KEY_RESPONSE = 12
    EPOCH_CONFIRMATION = 13
    UPLOAD_COMMITMENT = 14
    UPLOAD = 15
    COMMITMENT_LIST = 16
    ROUND_PROPOSAL = 17
    TRANSCRIPT_SIGNATURE = 18
    ROUND_CONFIRMATION = 19
    ROUND_SHARE = 20
    LOCAL_CLIENT_STATE = 21  # a client's own protocol state (secrets included), for its own storage only
    SHARE_DEALING = 22
    DEALT_SHARES = 23


def seal(kind: Kind, params: Params, body: bytes) -> bytes:
    """Wrap a body into an envelope."""
    head = _PREFIX.pack(MAGIC, VERSION, int(kind), params.fingerprint, len(body))
    return b"".join((head, body, _digest(head, body)))


HEAD_BYTES = _PREFIX.size  # where an envelope's body starts


def envelope_bytes(body_len: int) -> int:
    """Size of the envelope around a body of ``body_len`` bytes (head, body, digest)."""
    return _PREFIX.size + body_len + _DIGEST


def seal_in_place(kind: Kind, params: Params, buf: bytearray) -> None:
    """Write head and digest around the body already at ``buf[HEAD_BYTES:-32]``: ``seal``'s bytes, no body copy."""
    end = len(buf) - _DIGEST
    if end < _PREFIX.size:
        raise CryptoFormatError(f"{kind.name}: a buffer of {len(buf)} bytes cannot hold an envelope")
    head = _PREFIX.pack(MAGIC, VERSION, int(kind), params.fingerprint, end - _PREFIX.size)
    buf[: _PREFIX.size] = head
    with memoryview(buf) as view:
        tail = _digest(head, view[_PREFIX.size : end])
    buf[end:] = tail


def _digest(head: bytes, body: bytes | memoryview) -> bytes:
    h = hashlib.sha256(head)
    h.update(body)
    return h.digest()


def open_envelope(kind: Kind, params: Params, data: bytes) -> memoryview:
    """Check an envelope and return its body; raise ``CryptoFormatError`` naming the first problem."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CryptoFormatError(f"expected bytes, got {type(data).__name__}")
    view = memoryview(data).cast("B") if isinstance(data, memoryview) else memoryview(data)
    if len(view) < _PREFIX.size + _DIGEST:
        raise CryptoFormatError(f"{kind.name}: {len(view)} bytes is shorter than an envelope")
    magic, version, got_kind, fingerprint, length = _PREFIX.unpack_from(view, 0)
    if magic != MAGIC:
        raise CryptoFormatError(f"{kind.name}: not a BastionFL crypto envelope (bad magic)")
    if version != VERSION:
        raise CryptoFormatError(f"{kind.name}: unsupported envelope version {version} (expected {VERSION})")
    if got_kind != int(kind):
        raise CryptoFormatError(f"expected a {kind.name} envelope, got kind {got_kind}")
    if not hmac.compare_digest(fingerprint, params.fingerprint):
        raise CryptoFormatError(f"{kind.name}: made for other parameters (fingerprint mismatch with {params.name!r})")
    if length > MAX_BODY or _PREFIX.size + length + _DIGEST != len(view):
        raise CryptoFormatError(f"{kind.name}: length field {length} does not match the {len(view)} bytes received")
    end = _PREFIX.size + length
    if not hmac.compare_digest(_digest(bytes(view[: _PREFIX.size]), view[_PREFIX.size : end]), bytes(view[end:])):
        raise CryptoFormatError(f"{kind.name}: checksum mismatch (corrupted or truncated bytes)")
    return view[_PREFIX.size : end]


class Writer:
    """Builds a body from fixed-width integers and length-prefixed byte strings."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, v: int) -> Writer:
        self._parts.append(struct.pack("<B", v))
        return self

    def u32(self, v: int) -> Writer:
        self._parts.append(struct.pack("<I", v))
        return self

    def u64(self, v: int) -> Writer:
        self._parts.append(struct.pack("<Q", v))
        return self

    def f64(self, v: float) -> Writer:
        self._parts.append(struct.pack("<d", v))
        return self

    def raw(self, b: bytes) -> Writer:
        self._parts.append(bytes(b))
        return self

    def blob(self, b: bytes) -> Writer:
        self._parts.append(struct.pack("<Q", len(b)))
        self._parts.append(b)
        return self

    def array(self, a: np.ndarray) -> Writer:
        """Raw little-endian uint64 coefficients (the shape is implied by the message)."""
        self._parts.append(np.ascontiguousarray(a, dtype="<u8").tobytes())
        return self

    def blobs(self, items: list[bytes]) -> Writer:
        self.u32(len(items))
        for b in items:
            self.blob(b)
        return self

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Reads a body; every short read or leftover byte is a ``CryptoFormatError``."""

    def __init__(self, body: memoryview, what: str) -> None:
        self._b = body
        self._pos = 0
        self._what = what

    def _take(self, n: int) -> memoryview:
        if n < 0 or self._pos + n > len(self._b):
            raise CryptoFormatError(f"{self._what}: truncated body")
        out = self._b[self._pos : self._pos + n]
        self._pos += n
        return out

    def u8(self) -> int:
        return int(self._take(1)[0])

    def u32(self) -> int:
        return int(struct.unpack("<I", self._take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack("<Q", self._take(8))[0])

    def f64(self) -> float:
        return float(struct.unpack("<d", self._take(8))[0])

    def raw(self, n: int) -> bytes:
        return bytes(self._take(n))

    def view(self, n: int) -> memoryview:
        """The next ``n`` bytes without a copy (valid while the body's bytes live)."""
        return self._take(n)

    def blob(self, max_len: int) -> bytes:
        n = self.u64()
        if n > max_len:
            raise CryptoFormatError(f"{self._what}: field of {n} bytes exceeds the maximum {max_len}")
        return bytes(self._take(n))

    def array(self, shape: Sequence[int], primes: Sequence[int] | None = None) -> np.ndarray:
        """``prod(shape)`` uint64 values as an array of ``shape``; with ``primes``, each value below the prime of
        its row (axis -2), else ``CryptoFormatError``."""
        count = 1
        for d in shape:
            count *= int(d)
        out = np.frombuffer(self._take(8 * count), dtype="<u8").astype(np.uint64).reshape(tuple(shape))
        if primes is not None:
            q = np.asarray(primes, dtype=np.uint64).reshape((len(primes), 1))
            if out.shape[-2] != len(primes) or np.any(out >= q):
                raise CryptoFormatError(f"{self._what}: coefficient out of range for its prime")
        return out

    def blobs(self, max_count: int, max_len: int) -> list[bytes]:
        count = self.u32()
        if count > max_count:
            raise CryptoFormatError(f"{self._what}: {count} items exceed the maximum {max_count}")
        return [self.blob(max_len) for _ in range(count)]

    @property
    def remaining(self) -> int:
        """Bytes left to read (an optional trailing field is present when this is not 0)."""
        return len(self._b) - self._pos

    def done(self) -> None:
        if self._pos != len(self._b):
            raise CryptoFormatError(f"{self._what}: {len(self._b) - self._pos} unexpected trailing bytes")
