"""t-of-n decryption: the threshold rule, pairwise share boxes (X25519 + HKDF-SHA256 + AES-GCM), the re-randomised
aggregate of a decryption attempt, and the digests that bind a decrypting set.

Rule: with ``c`` colluding members, no key reconstruction needs ``t - 1 >= c``, and no two groups decrypting two
different upload sets in one round needs ``2t - n - 1 >= c`` (each honest member signs one transcript per round: two
transcripts with ``t`` signatures each share ``2t - n`` signers). ``c_max = min(t - 1, 2t - n - 1)``; ``t`` must
exceed ``n / 2``. The rule travels in the epoch opening that every member signs.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import CryptoFormatError, ParameterError, RosterError, VerificationError
from .flood import to_ntt
from .transcript import hash_parts
from .wire import Reader, Writer

if TYPE_CHECKING:
    from .params import Params

PPM = 1_000_000
XPK_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
MAX_ATTEMPTS = 4096  # decryption attempts per round (a member answers at most n - t + 1 of them)
MAX_REPROPOSALS = 3  # malicious t-of-n: strictly smaller upload sets a member signs after the first, per round


def c_max(t: int, n: int) -> int:
    """Largest number of colluding members a t-of-n epoch withstands (negative: none)."""
    return min(t - 1, 2 * t - n - 1)


@dataclass(frozen=True)
class ThresholdRule:
    """How many of an epoch's ``n`` members decrypt: a fraction in (0.5, 1] (parts per million) or a count."""

    ppm: int = 0
    count: int = 0

    def __post_init__(self) -> None:
        for name in ("ppm", "count"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
                raise ParameterError(f"threshold {name} must be a non-negative integer, got {v!r}")
        if (self.ppm > 0) == (self.count > 0):
            raise ParameterError("a threshold is either a fraction or a count, exactly one of them")
        if self.ppm and not PPM // 2 < self.ppm <= PPM:
            raise ParameterError(f"threshold fraction {self.ppm / PPM} outside (0.5, 1]")
        if self.count and not 1 <= self.count <= 100_000:
            raise ParameterError(f"threshold count {self.count} outside [1, 100000]")

    @classmethod
    def parse(cls, value: float | int) -> ThresholdRule:
        """A fraction in (0.5, 1] of the members, or an integer count above 1."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ParameterError(f"threshold must be a number, got {value!r}")
        if 0.5 < value <= 1.0:
            return cls(ppm=int(round(float(value) * PPM)))
        if value > 1 and float(value).is_integer():
            return cls(count=int(value))
        raise ParameterError(f"threshold {value!r}: a fraction in (0.5, 1] of the members or an integer count > 1")

    def threshold_for(self, members: int) -> int:
        """``t`` for an epoch of ``members``; ``RosterError`` if the count does not fit (t must exceed n / 2)."""
        t = -(-self.ppm * members // PPM) if self.ppm else self.count
        if not members // 2 < t <= members:
            raise RosterError(f"threshold {t} does not fit an epoch of {members} members (needs n/2 < t <= n)")
        return t

    def write(self, w: Writer) -> Writer:
        return w.u8(1).u32(self.ppm) if self.ppm else w.u8(2).u32(self.count)

    @classmethod
    def read(cls, r: Reader) -> ThresholdRule:
        kind, value = r.u8(), r.u32()
        try:
            if kind == 1:
                return cls(ppm=value)
            if kind == 2:
                return cls(count=value)
        except ParameterError as exc:
            raise CryptoFormatError(f"threshold rule: {exc}") from None
        raise CryptoFormatError("threshold rule: unknown kind")

    def encoded(self) -> bytes:
        """The rule's bytes (bound into the opening digest)."""
        return self.write(Writer()).getvalue()


# ---- pairwise boxes ----
class ExchangeKey:
    """A member's X25519 key for one epoch's share boxes. No repr of the secret, no pickling."""

    def __init__(self, key: X25519PrivateKey) -> None:
        self.__key = key
        self.public: bytes = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @classmethod
    def generate(cls) -> ExchangeKey:
        """A fresh key from the operating system's CSPRNG (through OpenSSL)."""
        return cls(X25519PrivateKey.generate())

    def private_bytes(self) -> bytes:
        """The 32-byte secret, for the member's own local state only."""
        return self.__key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                        serialization.NoEncryption())

    @classmethod
    def from_private_bytes(cls, data: bytes) -> ExchangeKey:
        try:
            return cls(X25519PrivateKey.from_private_bytes(bytes(data)))
        except ValueError:
            raise CryptoFormatError("exchange key: malformed") from None

    def box_key(self, peer: bytes, transcript: bytes, sender: int, recipient: int) -> bytes:
        """AES-256 key of the box from ``sender`` to ``recipient`` in the epoch of ``transcript``."""
        try:
            shared = self.__key.exchange(X25519PublicKey.from_public_bytes(bytes(peer)))
        except ValueError:
            raise VerificationError("a member's exchange key is not a valid X25519 key") from None
        info = box_context(transcript, sender, recipient)
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)

    def __repr__(self) -> str:
        return f"ExchangeKey(public={self.public[:6].hex()}…)"

    def __reduce__(self) -> object:
        raise TypeError("ExchangeKey holds a secret and cannot be pickled or copied")


def box_context(transcript: bytes, sender: int, recipient: int) -> bytes:
    """What a box is bound to (HKDF info and AES-GCM associated data): epoch roster, sender, recipient."""
    return hash_parts(b"share-box", transcript, struct.pack("<II", sender, recipient))


def seal_box(key: bytes, context: bytes, plaintext: bytes) -> bytes:
    """AES-256-GCM with a random nonce: nonce || ciphertext || tag."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, context)


def open_box(key: bytes, context: bytes, box: bytes) -> bytes:
    """Inverse of :func:`seal_box`; ``VerificationError`` if the box was altered or is for someone else."""
    if len(box) < NONCE_BYTES + TAG_BYTES:
        raise VerificationError("share box too short")
    try:
        return AESGCM(key).decrypt(box[:NONCE_BYTES], box[NONCE_BYTES:], context)
    except InvalidTag:
        raise VerificationError("a share box does not open (altered, or sealed for another member)") from None


def exchange_message(opening: bytes, verification_key: bytes, exchange_public: bytes) -> bytes:
    """What a member signs for its exchange key: the epoch opening, its verification key and the X25519 key."""
    return hash_parts(b"exchange-key", opening, verification_key, exchange_public)


def threshold_transcript(transcript: bytes, t: int, exchange_keys: Sequence[bytes]) -> bytes:
    """The roster transcript extended by ``t`` and every member's exchange key (roster order)."""
    return hash_parts(b"threshold-roster", transcript, struct.pack("<I", t), b"".join(exchange_keys))


# ---- decryption attempts ----
def check_attempt(attempt: int) -> None:
    """An attempt number is in [0, MAX_ATTEMPTS)."""
    if not 0 <= attempt < MAX_ATTEMPTS:
        raise VerificationError(f"decryption attempt {attempt} out of range")


def attempt_mask(params: Params, transcript: bytes, attempt: int) -> np.ndarray:
    """The re-randomiser ``u_a`` of attempt ``a`` in NTT form (L, N): a ternary polynomial drawn from
    SHAKE-256(transcript, a) (fixed by the round transcript: the server cannot choose it), the first attempt included.

    Attempt 0 too: a member's Shamir key share is full-size, so ``lambda k C1 + E`` on an aggregate that colluders
    chose (U of colluders alone, C1 a constant) gives each coefficient of k to within the flood, and two or three
    such rounds give k (``test_review2_threshold``). ``C1 + u_0 a`` is never the colluders' choice.

    A polynomial, never a scalar: with ``C1 + v_a a`` (scalar ``v_a``) one member's shares on several attempts are,
    coefficient by coefficient, noisy combinations of the same two unknowns (``k C1``, ``k a``) with known weights,
    and six of them give its key share to LLL (``test_review_threshold``). ``u_a a`` mixes every coefficient."""
    check_attempt(attempt)
    n = params.poly_modulus_degree
    raw = np.frombuffer(hashlib.shake_256(hash_parts(b"attempt-mask", transcript, struct.pack("<I", attempt)))
                        .digest(n // 4), dtype=np.uint8)
    bits = np.unpackbits(raw, bitorder="little").reshape(n, 2).astype(np.int64)
    ternary = bits[:, 0] - bits[:, 1]  # -1, 0, 1 with probabilities 1/4, 1/2, 1/4
    rows = np.stack([np.where(ternary < 0, q - 1, ternary).astype(np.uint64) for q in params.data_primes])
    return to_ntt(params, rows[None])[0]


def mulmod_slots(a: np.ndarray, b: np.ndarray, primes: Sequence[int]) -> np.ndarray:
    """``a * b mod q`` slot by slot (axis -2 of both is the prime, values below their prime < 2^60), exact."""
    q = np.broadcast_to(np.asarray(primes, dtype=np.uint64).reshape(len(primes), 1), a.shape)
    acc = np.zeros_like(a)
    for shift in range(60, -4, -4):
        nib = (b >> np.uint64(shift)) & np.uint64(0xF)
        acc = np.remainder(acc << np.uint64(4), q)  # acc < 2^60: the shift stays inside 64 bits
        acc = np.remainder(acc + np.remainder(a * nib, q), q)  # a * 15 < 2^64
    return acc


def rerandomise(c: np.ndarray, key_part: np.ndarray, mask: np.ndarray | None, primes: Sequence[int]) -> np.ndarray:
    """``c + u * key_part`` per ciphertext (c: (k, L, N); key_part, mask: (L, N)): C1 + u a, or C0 + u b~."""
    if mask is None:
        return c
    add = mulmod_slots(key_part, mask, primes)
    q = np.asarray(primes, dtype=np.uint64).reshape(len(primes), 1)
    out = c + add[None]
    np.subtract(out, q, out=out, where=out >= np.broadcast_to(q, out.shape))
    return out


def attempt_aggregate(params: Params, c: np.ndarray, key_part: np.ndarray, transcript: bytes,
                      attempt: int) -> np.ndarray:
    """Attempt ``a``'s re-randomised aggregate part: ``C1 + u_a a`` (key_part a) or ``C0 + u_a b~`` (key_part b~),
    an encryption of the same sum with the extra noise ``-u_a e~`` (ternary ``u_a``: about sqrt(N/2) |e~|)."""
    levels = len(params.data_primes)
    return rerandomise(c, key_part[:levels], attempt_mask(params, transcript, attempt), params.data_primes)


def decryption_transcript(round_transcript: bytes, attempt: int, decrypting: Sequence[int]) -> bytes:
    """What a share answers: the round transcript, the attempt and the decrypting set S (sorted member indices)."""
    body = struct.pack("<II", attempt, len(decrypting)) + b"".join(struct.pack("<I", i) for i in decrypting)
    return hash_parts(b"decryption", round_transcript, body)


def check_decrypting_set(decrypting: Sequence[int], t: int, members: int) -> None:
    """S is ``t`` distinct sorted member indices."""
    if len(decrypting) != t or list(decrypting) != sorted(set(decrypting)) or \
            any(not 0 <= i < members for i in decrypting):
        raise VerificationError(f"the decrypting set must be {t} distinct sorted members of the epoch")

