"""PROTOTYPE: streaming encryption and a streaming decryption share, so that a client's memory is O(one update)
whatever the federation size, and O(one ciphertext) while it encrypts. Measured by ``bench client --stream``.

What ``crypto/`` would need to make this the real path (nothing here changes the protocol or the wire format):

1. ``encrypt_chunks(apk, values) -> Iterator[bytes]`` yielding one ciphertext's wire bytes at a time, and
   ``EncryptedVector.from_chunks(params, chunks)`` on the server; the client's own c1 digest computed as it goes
   (``set_digest`` is a running hash already). Done here with one-ciphertext ``encrypt_vector`` calls and
   ``EncryptedVector(...)`` reassembled on the server.
2. ``KeyShare.decryption_share_stream(read)`` reading the request from a stream: the c1 lists arrive participant by
   participant, each ciphertext is loaded, checked and added into a running per-position sum at once, the running
   SHA-256 of the envelope and the per-participant digests are computed on the way, and every check of
   ``make_share`` (epoch, share cap, participant count, distinct entries, own entry present, no replay, C1 equal to
   the sum) passes before a share is made. Done here against ``crypto``'s internals (``backend``, ``wire``,
   ``decryption``): it must move into ``crypto/`` before any real client uses it.

One difference from the library's parser: each SEAL blob reaches SEAL's loader before the envelope's checksum at
the end is known. The checksum is integrity, not authenticity (any sender can compute a valid one), so what stands
against hostile bytes is the same in both: the header and size checks, SEAL's loader inside ``guarded``, and the
level/size/form/scale checks of every loaded ciphertext.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Any, Callable, Iterator

import numpy as np
import tenseal.sealapi as sa

from bastionfl import crypto as xc
from bastionfl.crypto.backend import backend, load, second_components_equal
from bastionfl.crypto.decryption import share_plaintexts, transcript_digest
from bastionfl.crypto.encryption import check_ciphertext, chunk_count, ciphertext_blob_limit
from bastionfl.crypto.wire import Kind, check_seal_blob, guarded

__all__ = ["encrypt_chunks", "assemble_update", "stream_share"]

_PREFIX = struct.Struct("<4sBB16sQ")
_C1SET = b"bastionfl/xmkckks/c1set/v1\x00"


def encrypt_chunks(apk: Any, update: np.ndarray) -> Iterator[tuple[bytes, bytes | None]]:
    """Yield (wire bytes of one ciphertext's update, None) per chunk, then (b"", own c1 digest)."""
    per = apk.params.floats_per_ciphertext
    flat = np.asarray(update, dtype=np.float64).ravel()
    digest = hashlib.sha256(_C1SET)
    for k in range(0, flat.size, per):
        ev = xc.encrypt_vector(apk, flat[k : k + per])
        for blob in ev.c1_blobs():
            digest.update(len(blob).to_bytes(8, "little"))
            digest.update(blob)
        yield ev.to_bytes(), None
        del ev
    yield b"", digest.digest()


def assemble_update(params: Any, chunks: list[bytes | bytearray]) -> Any:
    """Server: one ``EncryptedVector`` from its one-ciphertext parts (each parsed and validated)."""
    parts = [xc.EncryptedVector.from_bytes(params, c) for c in chunks]
    if not parts or len({p.epoch_id for p in parts}) != 1:
        raise xc.CryptoFormatError("streamed update: no parts, or parts of different key epochs")
    cts = [ct for p in parts for ct in p.ciphertexts]
    return xc.EncryptedVector(params, parts[0].epoch_id, sum(p.length for p in parts), cts)


class _Stream:
    """Sequential reads from ``read(n)`` with a running SHA-256 (the envelope checksum) and typed truncation."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read, self.hash = read, hashlib.sha256()

    def take(self, n: int, hashed: bool = True) -> bytes:
        data = self._read(n)
        if len(data) != n:
            raise xc.CryptoFormatError("decryption request: truncated stream")
        if hashed:
            self.hash.update(data)
        return data

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack("<Q", self.take(8))[0])

    def blob(self, limit: int) -> bytes:
        n = self.u64()
        if n > limit:
            raise xc.CryptoFormatError(f"decryption request: field of {n} bytes exceeds the maximum {limit}")
        return check_seal_blob(self.take(n), "decryption request")


def _load(params: Any, ctx: Any, blob: bytes) -> sa.Ciphertext:
    ct = sa.Ciphertext()
    guarded("decryption request", lambda: load(ct, ctx, blob))
    check_ciphertext(params, ct, "decryption request")
    return ct


def stream_share(key: Any, read: Callable[[int], bytes], total: int, own_digest: bytes) -> bytes:
    """Client: read today's request from ``read`` (``total`` bytes), check it as ``make_share`` does, share."""
    params, be = key.params, backend(key.params)
    s = _Stream(read)
    magic, version, kind, fingerprint, length = _PREFIX.unpack(s.take(_PREFIX.size))
    if (magic, version, kind) != (b"BFXM", 1, int(Kind.DECRYPTION_REQUEST)) or not hmac.compare_digest(
            fingerprint, params.fingerprint) or _PREFIX.size + length + 32 != total:
        raise xc.CryptoFormatError("decryption request: bad envelope (magic, kind, parameters or length)")
    if key.epoch_id is None or key.participants is None:
        raise xc.EpochError("no aggregated key accepted for this key share")
    epoch_id = s.take(16)
    round_number, vec_length = s.u64(), s.u64()
    if not hmac.compare_digest(epoch_id, key.epoch_id) or round_number >= 2**63 or vec_length < 1:
        raise xc.EpochError("request of another (old) key epoch, or a bad round or length: refused")
    if key.max_shares is not None and len(key.used_rounds) >= key.max_shares:
        raise xc.EpochError(f"this key share already produced {key.max_shares} shares")
    n_ct, limit = chunk_count(params, vec_length), ciphertext_blob_limit(params)
    if s.u32() != n_ct:
        raise xc.CryptoFormatError("decryption request: C1 count does not match the length")
    c1_blobs = [s.blob(limit) for _ in range(n_ct)]
    if s.u32() != key.participants:
        raise xc.VerificationError(f"request does not list the epoch's {key.participants} participants")
    sums: list[sa.Ciphertext | None] = [None] * n_ct
    digests = []
    for _ in range(key.participants):
        if s.u32() != n_ct:
            raise xc.CryptoFormatError("decryption request: ciphertext count does not match the length")
        h = hashlib.sha256(_C1SET)
        for k in range(n_ct):
            blob = s.blob(limit)
            h.update(len(blob).to_bytes(8, "little"))
            h.update(blob)
            ct = _load(params, be.ctx_a, blob)
            if sums[k] is None:
                sums[k] = ct
            else:
                be.eval_a.add_inplace(sums[k], ct)
        digests.append(h.digest())
    if not hmac.compare_digest(s.hash.digest(), s.take(32, hashed=False)):
        raise xc.CryptoFormatError("decryption request: checksum mismatch")
    if len(set(digests)) != len(digests) or own_digest not in digests:
        raise xc.VerificationError("request lists an entry twice, or not this client's own c1")
    set_id = hashlib.sha256(b"".join(sorted(digests))).digest()
    if round_number in key.used_rounds or set_id in key.used_sets:
        raise xc.VerificationError("a share was already produced for this round or ciphertext set: refused")
    for k, blob in enumerate(c1_blobs):
        if not second_components_equal(be.eval_a, sums[k], _load(params, be.ctx_a, blob)):
            raise xc.VerificationError(f"C1 of ciphertext {k} is not the sum of the listed c1: refused")
    c1_digest = hashlib.sha256(_C1SET)
    for blob in c1_blobs:
        c1_digest.update(len(blob).to_bytes(8, "little"))
        c1_digest.update(blob)
    transcript = transcript_digest(epoch_id, round_number, vec_length, c1_digest.digest(), digests)
    key.used_rounds.add(round_number)
    key.used_sets.add(set_id)
    pts = share_plaintexts(key, [t for t in sums if t is not None], params.smudging_std)
    return xc.DecryptionShare(params, key.epoch_id, round_number, transcript, key.public_share().digest,
                              pts).to_bytes()
