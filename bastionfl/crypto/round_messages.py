"""Wire messages of a round, one type per step (every field validated on parsing).

U1 client -> server: ``Upload`` (honest-but-curious, malicious: ciphertexts and their commitment) or the commitment
alone (malicious-colluding, ``commitment_to_bytes``); U2 server -> all: ``CommitmentList`` (malicious-colluding);
then ``Upload`` reveals the ciphertexts. D1 server -> all: ``RoundProposal``; D1 reply: ``TranscriptSignature``;
D2 server -> all: ``RoundConfirmation``; D2 reply: ``RoundShare``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .commitment import UploadCommitment
from .decryption import c1_shape
from .encryption import MAX_LENGTH, ciphertext_shape
from .errors import CryptoFormatError
from .identity import SIG_BYTES
from .keys import MAX_PARTICIPANTS
from .params import Params
from .sketch import SKETCH_SCALARS
from .wire import Kind, Reader, Writer, open_envelope, seal


def _count(r: Reader, what: str, low: int = 1) -> int:
    n = r.u32()
    if not low <= n <= MAX_PARTICIPANTS:
        raise CryptoFormatError(f"{what}: count out of range")
    return n


def _flag(r: Reader) -> bool:
    f = r.u8()
    if f not in (0, 1):
        raise CryptoFormatError("malformed presence flag")
    return bool(f)


def round_sketch_shape(params: Params) -> tuple[int, int]:
    """Shape of a sketch of c1 components: (data primes, scalars)."""
    return (len(params.data_bits), SKETCH_SCALARS)


def commitment_to_bytes(params: Params, c: UploadCommitment) -> bytes:
    """U1 (malicious-colluding): the signed commitment alone."""
    return seal(Kind.UPLOAD_COMMITMENT, params, c.write(Writer()).getvalue())


def commitment_from_bytes(params: Params, data: bytes) -> UploadCommitment:
    """Parse a commitment sent alone."""
    r = Reader(open_envelope(Kind.UPLOAD_COMMITMENT, params, data), "upload commitment")
    c = UploadCommitment.read(r)
    r.done()
    return c


@dataclass(frozen=True, eq=False)
class Upload:
    """The ciphertexts (k, 2, L, N) of one member's update and their commitment (signed in the malicious settings)."""

    commitment: UploadCommitment
    data: np.ndarray = field(repr=False)

    def to_bytes(self, params: Params) -> bytes:
        return seal(Kind.UPLOAD, params, self.commitment.write(Writer()).array(self.data).getvalue())

    @classmethod
    def from_bytes(cls, params: Params, data: bytes) -> Upload:
        r = Reader(open_envelope(Kind.UPLOAD, params, data), "upload")
        c = UploadCommitment.read(r)
        arr = r.array(ciphertext_shape(params, c.length), params.data_primes)
        r.done()
        return cls(c, arr)


@dataclass(frozen=True)
class CommitmentList:
    """U2 (malicious-colluding): every commitment of the round, fixed before any ciphertext is revealed."""

    round_number: int
    commitments: tuple[UploadCommitment, ...]

    def to_bytes(self, params: Params) -> bytes:
        w = Writer().u64(self.round_number).u32(len(self.commitments))
        for c in self.commitments:
            c.write(w)
        return seal(Kind.COMMITMENT_LIST, params, w.getvalue())

    @classmethod
    def from_bytes(cls, params: Params, data: bytes) -> CommitmentList:
        r = Reader(open_envelope(Kind.COMMITMENT_LIST, params, data), "commitment list")
        round_number = r.u64()
        commitments = tuple(UploadCommitment.read(r) for _ in range(_count(r, "commitment list")))
        r.done()
        return cls(round_number, commitments)


@dataclass(frozen=True, eq=False)
class RoundProposal:
    """D1: upload set U (member indices, sorted), their commitments, the aggregate's digest; in honest-but-curious
    the aggregate C1 itself; optionally the recipient's own c1 (malicious, for a client that did not keep it)."""

    round_number: int
    length: int
    uploads: tuple[int, ...]
    commitments: tuple[UploadCommitment, ...]
    aggregate_digest: bytes
    c1: np.ndarray | None = field(default=None, repr=False)
    own_c1: np.ndarray | None = field(default=None, repr=False)

    def to_bytes(self, params: Params) -> bytes:
        w = Writer().u64(self.round_number).u64(self.length).u32(len(self.uploads))
        for i in self.uploads:
            w.u32(i)
        for c in self.commitments:
            c.write(w)
        w.raw(self.aggregate_digest)
        for a in (self.c1, self.own_c1):
            w.u8(0) if a is None else w.u8(1).array(a)
        return seal(Kind.ROUND_PROPOSAL, params, w.getvalue())

    @classmethod
    def from_bytes(cls, params: Params, data: bytes) -> RoundProposal:
        r = Reader(open_envelope(Kind.ROUND_PROPOSAL, params, data), "round proposal")
        round_number, length = r.u64(), r.u64()
        if round_number >= 2**63 or not 1 <= length <= MAX_LENGTH:
            raise CryptoFormatError("round proposal: round or length out of range")
        n = _count(r, "round proposal")
        uploads = tuple(r.u32() for _ in range(n))
        commitments = tuple(UploadCommitment.read(r) for _ in range(n))
        agg = r.raw(32)
        shape = c1_shape(params, length)
        c1 = r.array(shape, params.data_primes) if _flag(r) else None
        own = r.array(shape, params.data_primes) if _flag(r) else None
        r.done()
        return cls(round_number, length, uploads, commitments, agg, c1, own)


@dataclass(frozen=True, eq=False)
class TranscriptSignature:
    """D1 reply: the member's signature on the round transcript and its sketch of its own c1 (malicious, if in U)."""

    member: int
    transcript: bytes
    sketch: np.ndarray | None = field(default=None, repr=False)
    signature: bytes = field(default=bytes(SIG_BYTES), repr=False)

    def write(self, w: Writer) -> Writer:
        w.u32(self.member).raw(self.transcript)
        w.u8(0) if self.sketch is None else w.u8(1).array(self.sketch)
        return w.raw(self.signature)

    @classmethod
    def read(cls, params: Params, r: Reader) -> TranscriptSignature:
        member, transcript = r.u32(), r.raw(32)
        sketch = r.array(round_sketch_shape(params)) if _flag(r) else None
        if sketch is not None and np.any(sketch >= np.asarray(params.data_primes, dtype=np.uint64).reshape(-1, 1)):
            raise CryptoFormatError("transcript signature: sketch value out of range")
        return cls(member, transcript, sketch, r.raw(SIG_BYTES))

    def to_bytes(self, params: Params) -> bytes:
        return seal(Kind.TRANSCRIPT_SIGNATURE, params, self.write(Writer()).getvalue())

    @classmethod
    def from_bytes(cls, params: Params, data: bytes) -> TranscriptSignature:
        r = Reader(open_envelope(Kind.TRANSCRIPT_SIGNATURE, params, data), "transcript signature")
        out = cls.read(params, r)
        r.done()
        return out


@dataclass(frozen=True, eq=False)
class RoundConfirmation:
    """D2: every member's transcript signature, and the aggregate C1 (malicious) or every c1 of U in U's order
    (malicious-colluding: clients check each against its commitment and sum them themselves). t-of-n: the signatures
    of U and of the decrypting set S (``t`` signers), the attempt number and S itself."""

    round_number: int
    length: int
    signatures: tuple[TranscriptSignature, ...]
    c1: np.ndarray | None = field(default=None, repr=False)
    components: tuple[np.ndarray, ...] = field(default=(), repr=False)
    attempt: int = 0
    decrypting: tuple[int, ...] = ()

    def to_bytes(self, params: Params) -> bytes:
        w = Writer().u64(self.round_number).u64(self.length).u32(len(self.signatures))
        for s in self.signatures:
            s.write(w)
        w.u8(0) if self.c1 is None else w.u8(1).array(self.c1)
        w.u32(len(self.components))
        for comp in self.components:
            w.array(comp)
        w.u32(self.attempt).u32(len(self.decrypting))
        for i in self.decrypting:
            w.u32(i)
        return seal(Kind.ROUND_CONFIRMATION, params, w.getvalue())

    @classmethod
    def from_bytes(cls, params: Params, data: bytes) -> RoundConfirmation:
        r = Reader(open_envelope(Kind.ROUND_CONFIRMATION, params, data), "round confirmation")
        round_number, length = r.u64(), r.u64()
        if round_number >= 2**63 or not 1 <= length <= MAX_LENGTH:
            raise CryptoFormatError("round confirmation: round or length out of range")
        signatures = tuple(TranscriptSignature.read(params, r) for _ in range(_count(r, "round confirmation")))
        shape = c1_shape(params, length)
        c1 = r.array(shape, params.data_primes) if _flag(r) else None
        components = tuple(r.array(shape, params.data_primes) for _ in range(_count(r, "components", low=0)))
        attempt = r.u32()
        decrypting = tuple(r.u32() for _ in range(_count(r, "decrypting set", low=0)))
        r.done()
        return cls(round_number, length, signatures, c1, components, attempt, decrypting)


@dataclass(frozen=True, eq=False)
class RoundShare:
    """D2 reply: the member's decryption share ``s_i C1 + E`` (k, L, N) bound to the round transcript."""

    member: int
    round_number: int
    transcript: bytes
    data: np.ndarray = field(repr=False)

    def to_bytes(self, params: Params) -> bytes:
        w = Writer().u32(self.member).u64(self.round_number).raw(self.transcript).u64(self.data.shape[0])
        return seal(Kind.ROUND_SHARE, params, w.array(self.data).getvalue())

    @classmethod
    def from_bytes(cls, params: Params, data: bytes) -> RoundShare:
        r = Reader(open_envelope(Kind.ROUND_SHARE, params, data), "round share")
        member, round_number, transcript, count = r.u32(), r.u64(), r.raw(32), r.u64()
        if not 1 <= count <= c1_shape(params, MAX_LENGTH)[0]:
            raise CryptoFormatError("round share: ciphertext count out of range")
        arr = r.array((count, len(params.data_bits), params.poly_modulus_degree), params.data_primes)
        r.done()
        return cls(member, round_number, transcript, arr)
