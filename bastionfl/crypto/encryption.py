"""Client-side encryption of a float vector under the aggregated public key (complex packing: two reals per slot)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import tenseal.sealapi as sa

from .backend import backend, load, save
from .errors import CryptoFormatError, EpochError, ParameterError
from .keys import AggregatedPublicKey
from .params import Params
from .wire import Kind, Reader, Writer, check_seal_blob, guarded, open_envelope, seal

MAX_LENGTH = 1 << 40


def ciphertext_blob_limit(params: Params) -> int:
    """Largest SEAL blob accepted for one data-level ciphertext."""
    return 2 * params.poly_modulus_degree * len(params.data_bits) * 8 + 4096


def chunk_count(params: Params, length: int) -> int:
    """Ciphertexts needed for ``length`` reals."""
    return max(1, -(-length // params.floats_per_ciphertext))


def check_ciphertext(params: Params, ct: sa.Ciphertext, what: str) -> None:
    """Refuse a ciphertext at the wrong level, size, form or scale."""
    be = backend(params)
    if ct.parms_id() != be.data_parms_id or ct.size() != 2 or not ct.is_ntt_form() or ct.scale != params.scale:
        raise CryptoFormatError(f"{what}: wrong level, size, form or scale for parameters {params.name!r}")


def set_digest(blobs: list[bytes]) -> bytes:
    """SHA-256 over length-prefixed blobs: the identity of one participant's c1 components."""
    h = hashlib.sha256(b"bastionfl/xmkckks/c1set/v1\x00")
    for b in blobs:
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.digest()


@dataclass(eq=False)
class EncryptedVector:
    """One client's encrypted update: ciphertexts under the epoch's aggregated key plus the true length."""

    params: Params
    epoch_id: bytes
    length: int
    ciphertexts: list[sa.Ciphertext] = field(repr=False)
    _c1: list[bytes] | None = field(default=None, repr=False)
    _c1_digest: bytes | None = field(default=None, repr=False)

    def c1_blobs(self) -> list[bytes]:
        """SEAL bytes of ``(0, c1)`` per ciphertext: this client's entry in the round's verification list."""
        if self._c1 is None:
            be = backend(self.params)
            self._c1 = [save(be.c1_only(ct, be.eval_a)) for ct in self.ciphertexts]
        return self._c1

    def c1_digest(self) -> bytes:
        """Digest of :meth:`c1_blobs` (what a client keeps to recognise its own entry)."""
        if self._c1_digest is None:
            self._c1_digest = set_digest(self.c1_blobs())
        return self._c1_digest

    def to_bytes(self) -> bytes:
        """Wire form: epoch id, length, SEAL ciphertexts."""
        w = Writer().raw(self.epoch_id).u64(self.length).blobs([save(ct) for ct in self.ciphertexts])
        return seal(Kind.ENCRYPTED_VECTOR, self.params, w.getvalue())

    @classmethod
    def from_bytes(cls, params: Params, data: bytes) -> "EncryptedVector":
        """Parse and validate every ciphertext before use."""
        r = Reader(open_envelope(Kind.ENCRYPTED_VECTOR, params, data), "encrypted vector")
        epoch_id = r.raw(16)
        length = r.u64()
        if not 1 <= length <= MAX_LENGTH:
            raise CryptoFormatError("encrypted vector: length out of range")
        blobs = r.blobs(chunk_count(params, length), ciphertext_blob_limit(params))
        r.done()
        if len(blobs) != chunk_count(params, length):
            raise CryptoFormatError("encrypted vector: ciphertext count does not match the length")
        return cls(params, epoch_id, length, load_ciphertexts(params, blobs, "encrypted vector"))


def load_ciphertexts(params: Params, blobs: list[bytes], what: str) -> list[sa.Ciphertext]:
    """Header-check, load and validate data-level ciphertexts."""
    be = backend(params)
    out = []
    for blob in blobs:
        check_seal_blob(blob, what)
        ct = sa.Ciphertext()
        guarded(what, lambda: load(ct, be.ctx_a, blob))
        check_ciphertext(params, ct, what)
        out.append(ct)
    return out


def _cached_encryptor(apk: AggregatedPublicKey) -> sa.Encryptor:
    """Encryptor of zeros under ``(b~, a) mod Q``: pk~ with its special prime dropped, in the data-primes context."""
    enc = apk.__dict__.get("_encryptor")
    if enc is None:
        be = backend(apk.params)
        dropped, neg = sa.Ciphertext(), sa.Ciphertext()
        be.eval_b.negate(apk.public_key.data(), neg)
        be.eval_b.negate(neg, dropped)
        be.eval_b.mod_switch_to_next_inplace(dropped)  # CKKS: drops the special prime's RNS component (B14)
        data_pk = sa.PublicKey()
        be.eval_b.negate(dropped, neg)
        be.eval_b.negate(neg, data_pk.data())
        if data_pk.parms_id() != be.ctx_direct.key_parms_id():
            raise RuntimeError("data-level public key landed at an unexpected level")
        enc = sa.Encryptor(be.ctx_direct, data_pk)
        object.__setattr__(apk, "_encryptor", enc)
    return enc


def encrypt_vector(apk: AggregatedPublicKey, values: np.ndarray) -> EncryptedVector:
    """Encrypt a float vector under the aggregated key (SEAL public-key encryption, fresh randomness per chunk).

    Refuses non-finite values and values that could overflow the modulus once summed over the epoch's participants.
    """
    params = apk.params
    flat = np.asarray(values, dtype=np.float64).ravel()
    if flat.size == 0:
        raise ParameterError("cannot encrypt an empty vector")
    if not np.all(np.isfinite(flat)):
        raise ParameterError("values contain NaN or infinity")
    params.check_sum_fits(apk.participants, float(np.max(np.abs(flat))))
    be = backend(params)
    per = params.floats_per_ciphertext
    n_ct = chunk_count(params, flat.size)
    padded = np.zeros(n_ct * per, dtype=np.float64)
    padded[: flat.size] = flat
    packed = padded.view(np.complex128)  # (x[2k], x[2k+1]) -> x[2k] + i·x[2k+1]
    encryptor = _cached_encryptor(apk)
    slots = params.slots
    key_level = be.ctx_direct.key_parms_id()
    cts = []
    for k in range(n_ct):
        pt = sa.Plaintext()
        be.encoder_a.encode(packed[k * slots : (k + 1) * slots].tolist(), be.data_parms_id, params.scale, pt)
        ct = sa.Ciphertext()
        encryptor.encrypt_zero(key_level, ct)  # u·(b~, a) + (e0, e1) mod Q, fresh u, e0, e1 from SEAL's PRNG
        ct.scale = params.scale
        be.eval_a.add_plain_inplace(ct, pt)
        cts.append(ct)
    return EncryptedVector(params, apk.epoch_id, int(flat.size), cts)


def decode_plaintexts(params: Params, plaintexts: list[sa.Plaintext], length: int) -> np.ndarray:
    """Decode complex-packed plaintexts back to ``length`` reals."""
    be = backend(params)
    parts = [np.asarray(be.encoder_a.decode_complex(pt), dtype=np.complex128) for pt in plaintexts]
    return np.concatenate(parts).view(np.float64)[:length].copy()


def require_epoch(obj_epoch: bytes, epoch_id: bytes, what: str) -> None:
    """Refuse an object of another key epoch."""
    if obj_epoch != epoch_id:
        raise EpochError(f"{what} belongs to another key epoch")
