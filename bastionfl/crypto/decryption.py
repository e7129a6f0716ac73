"""Decrypt stage (honest-but-curious API): the server's request, the client's checked and smudged share, and
fusion into the decoded sum with a range check against the bounds the clients declared."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from . import scheme
from .aggregation import Aggregate
from .encryption import MAX_LENGTH, EncryptedVector, chunk_count
from .errors import (
    CryptoError,
    CryptoFormatError,
    EpochError,
    IncompleteShareSetError,
    RangeCheckError,
    VerificationError,
)
from .keys import MAX_PARTICIPANTS
from .params import Params
from .polyarith import add_mod_inplace, digest, sum_mod
from .wire import Kind, Reader, Writer, open_envelope, seal

if TYPE_CHECKING:
    from .keys import KeyShare


def c1_shape(params: Params, length: int) -> tuple[int, int, int]:
    """Shape of the c1 components (or a share) of a vector of ``length`` reals: (k, L, N)."""
    return (chunk_count(params, length), len(params.data_bits), params.poly_modulus_degree)


def transcript_digest(
    epoch_id: bytes, round_number: int, length: int, c1_digest: bytes, component_digests: list[bytes]
) -> bytes:
    """Digest binding a request: epoch, round, length, aggregate C1 and every participant's c1 list in order."""
    h = hashlib.sha256(b"bastionfl/xmkckks/transcript/v2\x00" + epoch_id)
    h.update(round_number.to_bytes(8, "little") + length.to_bytes(8, "little") + c1_digest)
    h.update(len(component_digests).to_bytes(4, "little"))
    for d in component_digests:
        h.update(d)
    return h.digest()


@dataclass(eq=False)
class DecryptionRequest:
    """Server -> clients: aggregate ``C1`` and the list of every participant's ``c1`` (one entry each)."""

    params: Params
    epoch_id: bytes
    round_number: int
    length: int
    c1: np.ndarray = field(repr=False)  # (k, L, N)
    components: list[np.ndarray] = field(repr=False)
    _digests: tuple[bytes, list[bytes]] | None = field(default=None, repr=False)

    @classmethod
    def build(cls, aggregate: Aggregate, round_number: int) -> DecryptionRequest:
        """Server side: ``C1`` of the aggregate and the transcript recorded for fusion."""
        if not 0 <= round_number < 2**63:
            raise CryptoError("round number out of range")
        c1 = np.ascontiguousarray(aggregate.data[:, 1])
        req = cls(aggregate.params, aggregate.epoch_id, round_number, aggregate.length, c1, aggregate.components)
        aggregate.transcripts[round_number] = req.transcript
        return req

    def digests(self) -> tuple[bytes, list[bytes]]:
        """Digests of the aggregate C1 and of each participant's c1 (computed once)."""
        if self._digests is None:
            self._digests = (
                digest(b"aggregate-c1", self.c1),
                [digest(b"c1", np.ascontiguousarray(c)) for c in self.components],
            )
        return self._digests

    @property
    def transcript(self) -> bytes:
        """Digest of everything the request asks a client to decrypt."""
        c1_digest, component_digests = self.digests()
        return transcript_digest(self.epoch_id, self.round_number, self.length, c1_digest, component_digests)

    def to_bytes(self) -> bytes:
        """Wire form."""
        w = Writer().raw(self.epoch_id).u64(self.round_number).u64(self.length).array(self.c1)
        w.u32(len(self.components))
        for comp in self.components:
            w.array(comp)
        return seal(Kind.DECRYPTION_REQUEST, self.params, w.getvalue())

    @classmethod
    def from_bytes(cls, params: Params, data: bytes) -> DecryptionRequest:
        """Parse and validate every coefficient (``CryptoFormatError`` on any defect)."""
        r = Reader(open_envelope(Kind.DECRYPTION_REQUEST, params, data), "decryption request")
        epoch_id = r.raw(16)
        round_number = r.u64()
        length = r.u64()
        if not 1 <= length <= MAX_LENGTH or round_number >= 2**63:
            raise CryptoFormatError("decryption request: length or round out of range")
        shape = c1_shape(params, length)
        c1 = r.array(shape, params.data_primes)
        count = r.u32()
        if not 1 <= count <= MAX_PARTICIPANTS:
            raise CryptoFormatError("decryption request: participant count out of range")
        components = [r.array(shape, params.data_primes) for _ in range(count)]
        r.done()
        return cls(params, epoch_id, round_number, length, c1, components)


@dataclass(eq=False)
class DecryptionShare:
    """Client -> server: ``D_i = s_i C1 + e*`` per ciphertext, bound to the request's transcript."""

    params: Params
    epoch_id: bytes
    round_number: int
    transcript: bytes
    sender: bytes  # digest of the sender's public key share
    data: np.ndarray = field(repr=False)  # (k, L, N)

    def to_bytes(self) -> bytes:
        """Wire form."""
        w = Writer().raw(self.epoch_id).u64(self.round_number).raw(self.transcript).raw(self.sender)
        return seal(Kind.DECRYPTION_SHARE, self.params, w.u32(self.data.shape[0]).array(self.data).getvalue())

    @classmethod
    def from_bytes(cls, params: Params, data: bytes) -> DecryptionShare:
        """Parse and validate (count, every coefficient below its prime): never reaches SEAL."""
        r = Reader(open_envelope(Kind.DECRYPTION_SHARE, params, data), "decryption share")
        epoch_id = r.raw(16)
        round_number = r.u64()
        transcript = r.raw(32)
        sender = r.raw(32)
        count = r.u32()
        if not 1 <= count <= chunk_count(params, MAX_LENGTH):
            raise CryptoFormatError("decryption share: ciphertext count out of range")
        arr = r.array((count, len(params.data_bits), params.poly_modulus_degree), params.data_primes)
        r.done()
        return cls(params, epoch_id, round_number, transcript, sender, arr)


def make_share(key: KeyShare, request: DecryptionRequest, own: EncryptedVector | bytes) -> DecryptionShare:
    """Client side of the decrypt stage; see ``KeyShare.decryption_share``."""
    params = key.params
    if request.params != params or (isinstance(own, EncryptedVector) and own.params != params):
        raise EpochError("request of another parameter set")
    if key.epoch_id is None or key.participants is None:
        raise EpochError("no aggregated key accepted for this key share (call accept() first)")
    own_epoch_ok = not isinstance(own, EncryptedVector) or own.epoch_id == key.epoch_id
    if not hmac.compare_digest(request.epoch_id, key.epoch_id) or not own_epoch_ok:
        raise EpochError("request or own update of another (old) key epoch: refused")
    own_digest = own.c1_digest() if isinstance(own, EncryptedVector) else bytes(own)
    if len(request.components) != key.participants:
        raise VerificationError(
            f"request lists {len(request.components)} c1 entries, the key epoch has {key.participants} participants"
        )
    c1_digest, digests = request.digests()
    if len(set(digests)) != len(digests):
        raise VerificationError("request lists the same c1 entry twice")
    if not any(hmac.compare_digest(own_digest, d) for d in digests):
        raise VerificationError("request does not contain this client's own c1")
    set_id = hashlib.sha256(b"".join(sorted(digests))).digest()
    key.check_share_allowed(request.round_number, [set_id, c1_digest])
    if not np.array_equal(sum_mod(request.components, params.data_primes), request.c1):
        raise VerificationError("C1 is not the sum of the listed c1 components: refused")
    key.record_share(request.round_number, [set_id, c1_digest])
    data = key.partial_decrypt(request.c1, key.participants, key.participants)
    return DecryptionShare(params, key.epoch_id, request.round_number, request.transcript, key.public_share().digest, data)


def fuse_unchecked(params: Params, c0: np.ndarray, shares: Sequence[np.ndarray], length: int) -> np.ndarray:
    """``C0 + sum D_i`` decoded, with no completeness or range check: for tests that show what goes wrong."""
    acc = np.array(c0, dtype=np.uint64, copy=True)
    for s in shares:
        add_mod_inplace(acc, s, params.data_primes)
    return scheme.decode(params, acc, length)


def decode_checked(
    params: Params, c0: np.ndarray, shares: Sequence[np.ndarray], length: int, bound_total: float,
    members: int, uploads: int,
) -> np.ndarray:
    """Decode ``C0 + sum D_i`` and refuse a result outside the declared range (``RangeCheckError``).

    Each client declared ``max |x|`` of its update; the true sum lies within their total, and the decoding error
    is below ``noise_error``. A malformed ciphertext or an overflow decodes to values near Q/Delta instead.
    """
    out = fuse_unchecked(params, c0, shares, length)
    margin = 4.0 * params.noise_error(members, uploads, c0.shape[0]) + uploads * max(bound_total, 1.0) * 2.0**-40
    limit = bound_total + margin
    worst = float(np.max(np.abs(out))) if np.all(np.isfinite(out)) else float("inf")
    if not worst <= limit:
        raise RangeCheckError(
            f"decoded sum reaches {worst:.3g}, above the declared bound {bound_total:.3g} (+ error margin "
            f"{margin:.2g}): a malformed or overflowing ciphertext; the result is discarded"
        )
    return out


def fuse(aggregate: Aggregate, shares: Sequence[DecryptionShare], expected_participants: int) -> np.ndarray:
    """Decode the sum from one valid share per participant; ``IncompleteShareSetError`` if any is missing,
    ``RangeCheckError`` if the decoded sum exceeds the declared bounds."""
    if expected_participants != aggregate.participants:
        raise IncompleteShareSetError(
            f"expected {expected_participants} participants but the key epoch has {aggregate.participants}"
        )
    by_sender: dict[bytes, DecryptionShare] = {}
    for s in shares:
        if s.params != aggregate.params or s.epoch_id != aggregate.epoch_id:
            raise EpochError("decryption share of another parameter set or (old) key epoch: refused")
        if s.sender not in aggregate.share_digests:
            raise VerificationError("decryption share from a party outside the key epoch")
        expected = aggregate.transcripts.get(s.round_number)
        if expected is None or not hmac.compare_digest(expected, s.transcript):
            raise VerificationError("decryption share answers another request (transcript mismatch)")
        if s.data.shape[0] != aggregate.data.shape[0]:
            raise CryptoFormatError("decryption share has the wrong number of ciphertexts")
        if s.sender in by_sender:
            raise VerificationError("two decryption shares from the same participant")
        by_sender[s.sender] = s
    rounds = {s.round_number for s in by_sender.values()}
    if len(by_sender) < expected_participants or len(rounds) > 1:
        missing = expected_participants - len(by_sender)
        raise IncompleteShareSetError(
            f"share set incomplete: {len(by_sender)} of {expected_participants} participants ({missing} missing); "
            "decoding without every share gives noise, so nothing is returned"
        )
    ordered = [by_sender[d].data for d in aggregate.share_digests]
    n = aggregate.participants
    return decode_checked(aggregate.params, aggregate.data[:, 0], ordered, aggregate.length, aggregate.bound_total,
                          n, len(aggregate.components))


def weighted_mean(
    aggregate: Aggregate, shares: Sequence[DecryptionShare], total_count: float, expected_participants: int
) -> np.ndarray:
    """FedAvg: clients encrypted ``n_k x_k``; the fused sum divided by ``sum n_k`` is the weighted mean."""
    if not total_count > 0:
        raise CryptoError("total_count must be positive")
    return fuse(aggregate, shares, expected_participants) / float(total_count)
