"""xMK-CKKS operations on raw RNS arrays, with SEAL doing every secret-dependent step.

Shapes (L = data primes, N = ring degree, k = ciphertexts of a vector): public share ``b_i`` and aggregated ``b~``
(L+1, N) at the key level (data primes + special prime); ciphertexts (k, 2, L, N); ``c1`` lists, aggregate ``C1``,
decryption shares and floods (k, L, N). All in NTT form, every value below its prime.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import tenseal.sealapi as sa

from . import sealraw
from .backend import backend
from .crs import CrsSeed, crs_material
from .errors import BackendError
from .params import Params
from .polyarith import add_mod_inplace


@lru_cache(maxsize=16)
def crs_polynomial(params: Params, crs: CrsSeed) -> np.ndarray:
    """The public polynomial ``a`` of the epoch at the key level: shape (L+1, N)."""
    a = sealraw.ciphertext_data(crs_material(params, crs).a0)[1]
    a.setflags(write=False)
    return a


def generate_secret(params: Params) -> sa.SecretKey:
    """A fresh uniform ternary secret from SEAL's unseeded PRNG (helper context's key level)."""
    return sa.KeyGenerator(backend(params).ctx_b).secret_key()


def secret_data(params: Params, secret: sa.SecretKey) -> np.ndarray:
    """The secret's NTT coefficients (for the client's own storage only): shape (L+2, N)."""
    return sealraw.secret_key_data(secret, len(params.primes))


def secret_from_data(params: Params, data: np.ndarray) -> sa.SecretKey:
    """Inverse of :func:`secret_data` (``CryptoFormatError`` if a coefficient is out of range)."""
    be = backend(params)
    return sealraw.to_secret_key(be.ctx_b, be.ctx_b.key_parms_id(), data, params.primes)


def public_share(params: Params, crs: CrsSeed, secret: sa.SecretKey) -> np.ndarray:
    """``b_i = -(a s_i + e_i)`` with fresh SEAL noise ``e_i``: shape (L+1, N)."""
    be = backend(params)
    z = crs_material(params, crs).z
    dec = sa.Decryptor(be.ctx_b, secret)
    x = sa.Plaintext()
    dec.decrypt(z, x)  # z0 + a s_i
    pk = sa.Ciphertext()
    be.eval_b.sub_plain(z, x, pk)  # (-a s_i, a)
    noise_ct = sa.Ciphertext()
    sa.Encryptor(be.ctx_b, secret).encrypt_zero_symmetric(z.parms_id(), noise_ct)
    e = sa.Plaintext()
    dec.decrypt(noise_ct, e)  # -e_i: fresh SEAL error, std 3.2
    be.eval_b.add_plain_inplace(pk, e)
    data = sealraw.ciphertext_data(pk)
    if data.shape != (2, len(params.key_primes), params.poly_modulus_degree):
        raise BackendError("public share landed at an unexpected level")
    return data[0].copy()


def encryptor(params: Params, crs: CrsSeed, b_tilde: np.ndarray) -> sa.Encryptor:
    """SEAL encryptor under ``(b~, a) mod Q`` in the data-primes context (no special prime, no division by P)."""
    be = backend(params)
    levels = len(params.data_bits)
    data = np.stack([b_tilde[:levels], crs_polynomial(params, crs)[:levels]])
    pk = sealraw.to_public_key(be.ctx_direct, be.ctx_direct.key_parms_id(), data, params.data_primes)
    return sa.Encryptor(be.ctx_direct, pk)


def key_level_public_key(params: Params, crs: CrsSeed, b_tilde: np.ndarray) -> sa.PublicKey:
    """The aggregated key as a SEAL ``PublicKey`` of the scheme context (key level)."""
    be = backend(params)
    data = np.stack([b_tilde, crs_polynomial(params, crs)])
    return sealraw.to_public_key(be.ctx_a, be.key_parms_id, data, params.key_primes)


ENCODE_BITS = 40  # values are quantised at 2^40 (where double precision still rounds exactly), then lifted


def _lift(rows: np.ndarray, primes: tuple[int, ...], bits: int) -> np.ndarray:
    """``rows * 2^bits mod q`` per prime (shape (L, N)), four exact bits at a time (values < 2^60)."""
    q = np.asarray(primes, dtype=np.uint64).reshape(len(primes), 1)
    out = rows.copy()
    for _ in range(bits // 4):
        np.left_shift(out, np.uint64(4), out=out)
        np.remainder(out, q, out=out)
    if bits % 4:
        np.left_shift(out, np.uint64(bits % 4), out=out)
        np.remainder(out, q, out=out)
    return out


def encode(params: Params, values: np.ndarray) -> np.ndarray:
    """Each client's quantised input: ``2^(scale-40) * round(2^40 * emb^-1(x))`` per chunk, NTT form (k, L, N).

    SEAL's encoder computes in double precision: at a scale above ~2^50 its output carries tens of bits of
    float rounding that depend on the individual vector, and a decrypted sum would reveal their sum too. At 2^40
    the rounding is to the nearest integer (what any fixed-point secure aggregation reveals); the exact lift by a
    power of two then gives the scale the flood needs. The decrypted sum is the sum of these inputs, nothing else.
    """
    be = backend(params)
    per, slots = params.floats_per_ciphertext, params.slots
    n_ct = max(1, -(-values.size // per))
    padded = np.zeros(n_ct * per, dtype=np.float64)
    padded[: values.size] = values
    packed = padded.view(np.complex128)  # (x[2k], x[2k+1]) -> x[2k] + i x[2k+1]
    bits = min(params.scale_bits, ENCODE_BITS)
    out = np.empty((n_ct, len(params.data_bits), params.poly_modulus_degree), dtype=np.uint64)
    for k in range(n_ct):
        pt = sa.Plaintext()
        be.encoder_a.encode(packed[k * slots : (k + 1) * slots].tolist(), be.data_parms_id, float(2.0**bits), pt)
        row = sealraw.plaintext_data(pt, len(params.data_bits))
        out[k] = _lift(row, params.data_primes, params.scale_bits - bits) if params.scale_bits > bits else row
    return out


def encrypt(params: Params, enc: sa.Encryptor, values: np.ndarray) -> np.ndarray:
    """Encrypt reals (complex packing, zero padded) under the aggregated key: shape (k, 2, L, N)."""
    be = backend(params)
    z = encode(params, values)
    key_level = be.ctx_direct.key_parms_id()
    out = np.empty((z.shape[0], 2, len(params.data_bits), params.poly_modulus_degree), dtype=np.uint64)
    for k in range(z.shape[0]):
        ct = sa.Ciphertext()
        enc.encrypt_zero(key_level, ct)  # u (b~, a) + (e0, e1) mod Q, fresh u, e0, e1 from SEAL's PRNG
        out[k] = sealraw.ciphertext_data(ct)
        add_mod_inplace(out[k, 0], z[k], params.data_primes)
    return out


def partial_decrypt(params: Params, decryptor: sa.Decryptor, c1: np.ndarray, flood: np.ndarray | None) -> np.ndarray:
    """``D = s_i C1 + E`` per ciphertext: shape (k, L, N). ``flood`` None only in tests that show the leak."""
    be = backend(params)
    zeros = np.zeros(c1.shape[1:], dtype=np.uint64)
    out = np.empty_like(c1)
    for k in range(c1.shape[0]):
        target = sealraw.to_ciphertext(
            be.ctx_a, be.data_parms_id, np.stack([zeros, c1[k]]), params.data_primes, params.scale
        )
        pt = sa.Plaintext()
        decryptor.decrypt(target, pt)  # s_i C1 (NTT form, unrounded: B1)
        out[k] = sealraw.plaintext_data(pt, len(params.data_bits))
    if flood is not None:
        add_mod_inplace(out, flood, params.data_primes)
    return out


def decode(params: Params, fused: np.ndarray, length: int) -> np.ndarray:
    """Decode ``C0 + sum D_i`` (shape (k, L, N)) back to ``length`` reals."""
    be = backend(params)
    parts = []
    for k in range(fused.shape[0]):
        pt = sealraw.to_plaintext(be.ctx_a, be.data_parms_id, fused[k], params.data_primes, params.scale)
        parts.append(np.asarray(be.encoder_a.decode_complex(pt), dtype=np.complex128))
    return np.concatenate(parts).view(np.float64)[:length].copy()
