"""Signed commitments: a member's key-setup entry (its public share digest and verification key) and its upload
commitment (epoch, round, digests of the ciphertexts' two components, declared bound, FedAvg weight and the example
count behind it, and the digest of the model the update was computed from)."""

from __future__ import annotations

import hmac
import math
import struct
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .errors import CryptoFormatError
from .identity import SIG_BYTES, VK_BYTES, EpochIdentity, verify
from .polyarith import digest
from .transcript import hash_parts, member_message
from .wire import Reader, Writer

_UPLOAD = struct.Struct("<QIQIdd")
NO_SIGNATURE = bytes(SIG_BYTES)


def component_digests(data: np.ndarray) -> tuple[bytes, bytes]:
    """Digests of the c0 and c1 components of ciphertexts of shape (k, 2, L, N)."""
    return (digest(b"c0", np.ascontiguousarray(data[:, 0])), digest(b"c1", np.ascontiguousarray(data[:, 1])))


@dataclass(frozen=True)
class MemberEntry:
    """A member of the epoch: verification key, digest of its public share (or commitment to it), signature."""

    verification_key: bytes
    share_digest: bytes
    signature: bytes = field(default=NO_SIGNATURE, repr=False)

    @classmethod
    def make(cls, identity: EpochIdentity, opening: bytes, share_digest: bytes, purpose: bytes) -> MemberEntry:
        """Signed by the member's epoch key over (opening, share digest, verification key)."""
        vk = identity.verification_key
        return cls(vk, share_digest, identity.sign(purpose, member_message(opening, share_digest, vk)))

    def valid(self, opening: bytes, purpose: bytes) -> bool:
        """The signature checks under the entry's own verification key."""
        return verify(self.verification_key, purpose, member_message(opening, self.share_digest,
                                                                     self.verification_key), self.signature)

    def write(self, w: Writer) -> Writer:
        return w.raw(self.verification_key).raw(self.share_digest).raw(self.signature)

    @classmethod
    def read(cls, r: Reader) -> MemberEntry:
        return cls(r.raw(VK_BYTES), r.raw(32), r.raw(SIG_BYTES))


@dataclass(frozen=True)
class UploadCommitment:
    """A member's commitment to its upload of one round (signed in both malicious settings)."""

    epoch: bytes  # the epoch digest (32 bytes)
    round_number: int
    member: int  # index in the roster (sorted by verification key)
    length: int
    bound: float  # declared max |x| of the update
    weight: float  # FedAvg weight (the update is weight * delta)
    c0_digest: bytes
    c1_digest: bytes
    signature: bytes = field(default=NO_SIGNATURE, repr=False)
    examples: int = 0  # the FedAvg example count behind ``weight`` (0: not declared); weight / examples is common
    context: bytes = bytes(32)  # digest of what the update was computed from (the global model); common to U

    @property
    def message(self) -> bytes:
        """The signed bytes."""
        fields = _UPLOAD.pack(self.round_number, self.member, self.length, self.examples, self.bound, self.weight)
        return hash_parts(b"upload-commitment", self.epoch, fields, self.c0_digest, self.c1_digest, self.context)

    @cached_property
    def digest(self) -> bytes:
        """What the round transcript lists for this upload."""
        return self.message

    def signed(self, identity: EpochIdentity) -> UploadCommitment:
        """The same commitment with the member's signature."""
        return UploadCommitment(self.epoch, self.round_number, self.member, self.length, self.bound, self.weight,
                                self.c0_digest, self.c1_digest, identity.sign(b"upload", self.message), self.examples,
                                self.context)

    def valid(self, verification_key: bytes) -> bool:
        """The signature checks under the member's key."""
        return verify(verification_key, b"upload", self.message, self.signature)

    def matches(self, data: np.ndarray) -> bool:
        """The ciphertexts (k, 2, L, N) are the committed ones (constant-time digest comparison)."""
        c0, c1 = component_digests(data)
        return hmac.compare_digest(c0, self.c0_digest) and hmac.compare_digest(c1, self.c1_digest)

    def write(self, w: Writer) -> Writer:
        w.raw(self.epoch).u64(self.round_number).u32(self.member).u64(self.length).f64(self.bound)
        w.f64(self.weight).raw(self.c0_digest).raw(self.c1_digest).raw(self.signature)
        return w.u32(self.examples).raw(self.context)

    @classmethod
    def read(cls, r: Reader) -> UploadCommitment:
        epoch, round_number, member, length = r.raw(32), r.u64(), r.u32(), r.u64()
        bound, weight = r.f64(), r.f64()
        c0, c1, sig, examples, context = r.raw(32), r.raw(32), r.raw(SIG_BYTES), r.u32(), r.raw(32)
        if round_number >= 2**63 or not 1 <= length <= 1 << 40:
            raise CryptoFormatError("upload commitment: round or length out of range")
        if not (math.isfinite(bound) and bound >= 0 and math.isfinite(weight) and weight >= 0):
            raise CryptoFormatError("upload commitment: bound or weight not a finite number >= 0")
        return cls(epoch, round_number, member, length, bound, weight, c0, c1, sig, examples, context)
