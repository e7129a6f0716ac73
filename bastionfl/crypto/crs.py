"""Common reference string: the public polynomial ``a`` derived from a public session seed, never chosen by a party."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from functools import lru_cache

import tenseal.sealapi as sa

from .backend import backend
from .errors import CryptoFormatError, ParameterError
from .params import Params
from .wire import Kind, Reader, Writer, open_envelope, seal

_MAX_RUN_ID = 256


@dataclass(frozen=True)
class CrsSeed:
    """Public seed of one key epoch: SHA-512("bastionfl/xmkckks/crs/v1", run id, epoch) seeds SEAL's Blake2xb PRNG."""

    run_id: str
    epoch: int

    @classmethod
    def from_session(cls, run_id: str, epoch: int) -> CrsSeed:
        """The deterministic seed of (run id, key epoch): every party recomputes it."""
        if not isinstance(run_id, str) or len(run_id.encode()) > _MAX_RUN_ID:
            raise ParameterError(f"run_id must be a string of at most {_MAX_RUN_ID} UTF-8 bytes")
        if not isinstance(epoch, int) or not 0 <= epoch < 2**63:
            raise ParameterError("epoch must be an integer in [0, 2^63)")
        return cls(run_id, epoch)

    @property
    def digest(self) -> bytes:
        """64-byte SHA-512 of the session string."""
        material = b"bastionfl/xmkckks/crs/v1\x00" + self.run_id.encode() + b"\x00" + struct.pack(">Q", self.epoch)
        return hashlib.sha512(material).digest()

    def seed_words(self) -> list[int]:
        """The digest as eight little-endian uint64 words, the seed format of SEAL's PRNG factories."""
        return list(struct.unpack("<8Q", self.digest))

    def to_bytes(self, params: Params) -> bytes:
        """Wire form (tagged with the parameter fingerprint the seed is meant for)."""
        run = self.run_id.encode()
        return seal(Kind.CRS_SEED, params, Writer().blob(run).u64(self.epoch).getvalue())

    @classmethod
    def from_bytes(cls, params: Params, data: bytes) -> CrsSeed:
        """Parse a wire CRS seed; ``CryptoFormatError`` on any defect."""
        r = Reader(open_envelope(Kind.CRS_SEED, params, data), "CRS seed")
        raw = r.blob(_MAX_RUN_ID)
        epoch = r.u64()
        r.done()
        try:
            run_id = raw.decode()
        except UnicodeDecodeError:
            raise CryptoFormatError("CRS seed: run id is not UTF-8") from None
        if epoch >= 2**63:
            raise CryptoFormatError("CRS seed: epoch out of range")
        return cls(run_id, epoch)


@dataclass(frozen=True)
class CrsMaterial:
    """``z = (z0, a)`` from the seeded context and ``a0 = (0, a)``, both ctx_b ciphertexts at ctx_a's key level."""

    z: sa.Ciphertext
    a0: sa.Ciphertext


@lru_cache(maxsize=16)
def crs_material(params: Params, crs: CrsSeed) -> CrsMaterial:
    """Derive ``a`` deterministically: a symmetric encryption of zero in a context seeded by the CRS.

    The seeded context's secret key and ``z0`` are public by construction; the context is used for nothing else.
    """
    be = backend(params)
    seeded = be.seeded_context(crs.seed_words())
    public_sk = sa.KeyGenerator(seeded).secret_key()
    z = sa.Ciphertext()
    sa.Encryptor(seeded, public_sk).encrypt_zero_symmetric(seeded.first_parms_id(), z)
    a0 = be.c1_only(z, be.eval_b)
    return CrsMaterial(z=z, a0=a0)
