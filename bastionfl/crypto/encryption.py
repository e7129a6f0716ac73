"""Client-side encryption of a float vector under the aggregated public key (complex packing: two reals per slot)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import tenseal.sealapi as sa

from . import scheme, sealraw
from .backend import backend
from .errors import CryptoFormatError, EpochError, ParameterError
from .keys import AggregatedPublicKey
from .params import Params
from .polyarith import digest
from .wire import Kind, Reader, Writer, open_envelope, seal

MAX_LENGTH = 1 << 40


def chunk_count(params: Params, length: int) -> int:
    """Ciphertexts needed for ``length`` reals."""
    return max(1, -(-length // params.floats_per_ciphertext))


def ciphertext_shape(params: Params, length: int) -> tuple[int, int, int, int]:
    """Shape of the ciphertexts of a vector of ``length`` reals: (k, 2, L, N)."""
    return (chunk_count(params, length), 2, len(params.data_bits), params.poly_modulus_degree)


def check_values(params: Params, values: np.ndarray, participants: int) -> tuple[np.ndarray, float]:
    """Flatten to float64 and refuse empty, non-finite or overflowing vectors; returns (flat, max |x|)."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    if flat.size == 0 or flat.size > MAX_LENGTH:
        raise ParameterError("cannot encrypt an empty (or absurdly long) vector")
    if not np.all(np.isfinite(flat)):
        raise ParameterError("values contain NaN or infinity")
    bound = float(np.max(np.abs(flat)))
    params.check_sum_fits(participants, bound)
    return flat, bound


def check_bound(params: Params, bound: float, what: str) -> float:
    """A declared value bound: finite, >= 0 and decodable for one client."""
    if not (math.isfinite(bound) and 0 <= bound <= params.max_sum_magnitude):
        raise CryptoFormatError(f"{what}: declared value bound {bound!r} out of range")
    return bound


@dataclass(eq=False)
class EncryptedVector:
    """One client's encrypted update: ciphertexts under the epoch's aggregated key, the true length and the bound
    ``max |x|`` the client declares (the server's range check of the decoded sum uses it)."""

    params: Params
    epoch_id: bytes
    length: int
    data: np.ndarray = field(repr=False)  # (k, 2, L, N)
    bound: float = 0.0

    @property
    def ciphertexts(self) -> list[sa.Ciphertext]:
        """The ciphertexts as SEAL objects (built from the coefficients)."""
        be = backend(self.params)
        return [
            sealraw.to_ciphertext(be.ctx_a, be.data_parms_id, ct, self.params.data_primes, self.params.scale)
            for ct in self.data
        ]

    def c1(self) -> np.ndarray:
        """The second components ``c1`` of every ciphertext: shape (k, L, N)."""
        return self.data[:, 1]

    @cached_property
    def _c1_digest(self) -> bytes:
        return digest(b"c1", np.ascontiguousarray(self.data[:, 1]))

    def c1_digest(self) -> bytes:
        """Digest of :meth:`c1` (what a client keeps to recognise its own entry)."""
        return self._c1_digest

    def to_bytes(self) -> bytes:
        """Wire form: epoch id, length, declared bound, coefficients."""
        w = Writer().raw(self.epoch_id).u64(self.length).f64(self.bound).array(self.data)
        return seal(Kind.ENCRYPTED_VECTOR, self.params, w.getvalue())

    @classmethod
    def from_bytes(cls, params: Params, data: bytes) -> EncryptedVector:
        """Parse and validate every coefficient before use."""
        r = Reader(open_envelope(Kind.ENCRYPTED_VECTOR, params, data), "encrypted vector")
        epoch_id = r.raw(16)
        length = r.u64()
        if not 1 <= length <= MAX_LENGTH:
            raise CryptoFormatError("encrypted vector: length out of range")
        bound = check_bound(params, r.f64(), "encrypted vector")
        arr = r.array(ciphertext_shape(params, length), params.data_primes)
        r.done()
        return cls(params, epoch_id, length, arr, bound)


def encrypt_vector(apk: AggregatedPublicKey, values: np.ndarray) -> EncryptedVector:
    """Encrypt a float vector under the aggregated key (SEAL public-key encryption, fresh randomness per chunk).

    Refuses non-finite values and values that could overflow the modulus once summed over the epoch's participants.
    """
    flat, bound = check_values(apk.params, values, apk.participants)
    data = scheme.encrypt(apk.params, apk.encryptor, flat)
    return EncryptedVector(apk.params, apk.epoch_id, int(flat.size), data, bound)


def require_epoch(obj_epoch: bytes, epoch_id: bytes, what: str) -> None:
    """Refuse an object of another key epoch."""
    if obj_epoch != epoch_id:
        raise EpochError(f"{what} belongs to another key epoch")
