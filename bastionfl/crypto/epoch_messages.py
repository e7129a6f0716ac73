"""Wire messages of the key-epoch exchanges, one type per step (every field validated on parsing).

K0 server -> all: ``EpochOpening``. K1 client -> server: ``KeySetupReply``. K2 server -> all: ``EpochProposal``.
K2 reply: ``KeyResponse``. K3 server -> all: ``EpochConfirmation``. Which fields are present depends on the threat
model (see ``client_epoch``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .commitment import MemberEntry
from .crs import CrsSeed
from .errors import CryptoFormatError
from .identity import SIG_BYTES
from .keys import MAX_PARTICIPANTS, key_shape, read_crs, write_crs
from .params import Params
from .sketch import SKETCH_SCALARS
from .threat import ThreatModel
from .threshold import XPK_BYTES, ThresholdRule
from .transcript import opening_digest
from .wire import Kind, Reader, Writer, open_envelope, seal


def _threat(r: Reader) -> ThreatModel:
    code = r.u8()
    try:
        return ThreatModel.from_code(code)
    except Exception:
        raise CryptoFormatError(f"unknown threat model code {code}") from None


def _optional_array(r: Reader, shape: tuple[int, ...], primes: tuple[int, ...]) -> np.ndarray | None:
    flag = r.u8()
    if flag not in (0, 1):
        raise CryptoFormatError("malformed presence flag")
    return r.array(shape, primes) if flag else None


def _write_optional(w: Writer, a: np.ndarray | None) -> Writer:
    return w.u8(0) if a is None else w.u8(1).array(a)


def _count(r: Reader, what: str) -> int:
    n = r.u32()
    if not 1 <= n <= MAX_PARTICIPANTS:
        raise CryptoFormatError(f"{what}: member count out of range")
    return n


def key_sketch_shape(params: Params) -> tuple[int, int]:
    """Shape of a sketch of a public share: (data primes + special prime, scalars)."""
    return (len(params.key_primes), SKETCH_SCALARS)


@dataclass(frozen=True)
class EpochOpening:
    """K0: the key epoch the server opens (threat model, public CRS seed, and the t-of-n rule if any)."""

    threat_model: ThreatModel
    crs: CrsSeed
    threshold: ThresholdRule | None = None

    def digest(self, params: Params) -> bytes:
        """Binds parameters, threat model, CRS and threshold rule: every member entry signs it."""
        rule = b"" if self.threshold is None else self.threshold.encoded()
        return opening_digest(params, self.threat_model, self.crs, rule)

    def to_bytes(self, params: Params) -> bytes:
        w = write_crs(Writer().u8(self.threat_model.code), self.crs)
        if self.threshold is not None:
            self.threshold.write(w)
        return seal(Kind.EPOCH_OPENING, params, w.getvalue())

    @classmethod
    def from_bytes(cls, params: Params, data: bytes) -> EpochOpening:
        r = Reader(open_envelope(Kind.EPOCH_OPENING, params, data), "epoch opening")
        threat = _threat(r)
        crs = read_crs(r)
        rule = None if r.remaining == 0 else ThresholdRule.read(r)
        r.done()
        return cls(threat, crs, rule)


def _write_exchange(w: Writer, ex: tuple[bytes, bytes] | None) -> Writer:
    return w.u8(0) if ex is None else w.u8(1).raw(ex[0]).raw(ex[1])


def _read_exchange(r: Reader) -> tuple[bytes, bytes] | None:
    flag = r.u8()
    if flag not in (0, 1):
        raise CryptoFormatError("malformed presence flag")
    return (r.raw(XPK_BYTES), r.raw(SIG_BYTES)) if flag else None


@dataclass(frozen=True, eq=False)
class KeySetupReply:
    """K1: the member's entry, with its public share ``b_i`` (absent in malicious-colluding: committed only) and,
    for t-of-n decryption, its X25519 exchange key signed under its epoch key."""

    threat_model: ThreatModel
    entry: MemberEntry
    b: np.ndarray | None = field(default=None, repr=False)
    exchange: tuple[bytes, bytes] | None = None  # (X25519 public key, signature)

    def to_bytes(self, params: Params) -> bytes:
        w = self.entry.write(Writer().u8(self.threat_model.code))
        return seal(Kind.KEY_SETUP_REPLY, params, _write_exchange(_write_optional(w, self.b), self.exchange).getvalue())

    @classmethod
    def from_bytes(cls, params: Params, data: bytes) -> KeySetupReply:
        r = Reader(open_envelope(Kind.KEY_SETUP_REPLY, params, data), "key setup reply")
        threat = _threat(r)
        entry = MemberEntry.read(r)
        b = _optional_array(r, key_shape(params), params.key_primes)
        exchange = _read_exchange(r)
        r.done()
        return cls(threat, entry, b, exchange)


@dataclass(frozen=True, eq=False)
class EpochProposal:
    """K2: the roster (every member's signed entry) and, except in malicious-colluding, the aggregated ``b~``."""

    threat_model: ThreatModel
    crs: CrsSeed
    members: tuple[MemberEntry, ...]
    b_tilde: np.ndarray | None = field(default=None, repr=False)
    exchange: tuple[tuple[bytes, bytes], ...] | None = None  # t-of-n: every member's signed X25519 key, roster order

    def to_bytes(self, params: Params) -> bytes:
        w = write_crs(Writer().u8(self.threat_model.code), self.crs).u32(len(self.members))
        for m in self.members:
            m.write(w)
        _write_optional(w, self.b_tilde)
        if self.exchange is None:
            w.u8(0)
        else:
            w.u8(1)
            for ex in self.exchange:
                w.raw(ex[0]).raw(ex[1])
        return seal(Kind.EPOCH_PROPOSAL, params, w.getvalue())

    @classmethod
    def from_bytes(cls, params: Params, data: bytes) -> EpochProposal:
        r = Reader(open_envelope(Kind.EPOCH_PROPOSAL, params, data), "epoch proposal")
        threat = _threat(r)
        crs = read_crs(r)
        members = tuple(MemberEntry.read(r) for _ in range(_count(r, "epoch proposal")))
        b_tilde = _optional_array(r, key_shape(params), params.key_primes)
        flag = r.u8()
        if flag not in (0, 1):
            raise CryptoFormatError("epoch proposal: malformed presence flag")
        exchange = tuple((r.raw(XPK_BYTES), r.raw(SIG_BYTES)) for _ in members) if flag else None
        r.done()
        return cls(threat, crs, members, b_tilde, exchange)


@dataclass(frozen=True, eq=False)
class KeyResponse:
    """K2 reply: malicious, the member's signed sketch of its own ``b_i``; malicious-colluding, ``b_i`` revealed."""

    member: int
    sketch: np.ndarray | None = field(default=None, repr=False)
    signature: bytes = field(default=bytes(SIG_BYTES), repr=False)
    b: np.ndarray | None = field(default=None, repr=False)

    def write(self, w: Writer) -> Writer:
        _write_optional(w.u32(self.member), self.sketch).raw(self.signature)
        return _write_optional(w, self.b)

    @classmethod
    def read(cls, params: Params, r: Reader) -> KeyResponse:
        member = r.u32()
        flag = r.u8()
        if flag not in (0, 1):
            raise CryptoFormatError("key response: malformed presence flag")
        sketch = r.array(key_sketch_shape(params)) if flag else None
        if sketch is not None and np.any(sketch >= np.asarray(params.key_primes, dtype=np.uint64).reshape(-1, 1)):
            raise CryptoFormatError("key response: sketch value out of range")
        signature = r.raw(SIG_BYTES)
        return cls(member, sketch, signature, _optional_array(r, key_shape(params), params.key_primes))

    def to_bytes(self, params: Params) -> bytes:
        return seal(Kind.KEY_RESPONSE, params, self.write(Writer()).getvalue())

    @classmethod
    def from_bytes(cls, params: Params, data: bytes) -> KeyResponse:
        r = Reader(open_envelope(Kind.KEY_RESPONSE, params, data), "key response")
        out = cls.read(params, r)
        r.done()
        return out


@dataclass(frozen=True, eq=False)
class EpochConfirmation:
    """K3: every member's key response, in roster order (signed sketches, or revealed public shares)."""

    responses: tuple[KeyResponse, ...]

    def to_bytes(self, params: Params) -> bytes:
        w = Writer().u32(len(self.responses))
        for resp in self.responses:
            resp.write(w)
        return seal(Kind.EPOCH_CONFIRMATION, params, w.getvalue())

    @classmethod
    def from_bytes(cls, params: Params, data: bytes) -> EpochConfirmation:
        r = Reader(open_envelope(Kind.EPOCH_CONFIRMATION, params, data), "epoch confirmation")
        responses = tuple(KeyResponse.read(params, r) for _ in range(_count(r, "epoch confirmation")))
        r.done()
        return cls(responses)
