"""The smudging flood: exact integers from os.urandom, reduced mod each prime and put into NTT form by SEAL.

Each coefficient is the sum of ``FLOOD_TERMS`` independent uniform integers in ``[-2^b, 2^b)``: exact (no floating
point, so no deterministic low bits at any size), CSPRNG-drawn, and analysed in ``smudging``. For b > 60 a uniform
is drawn as ``H * 2^32 + L`` (H uniform in [-2^(b-32), 2^(b-32)), L uniform in [0, 2^32)), and reduced as
``((H mod q) * 2^32 + L) mod q`` with eight exact shift-by-4 steps (q < 2^60 keeps every step inside uint64).
The NTT is SEAL's own: a coefficient-form ciphertext carrying up to 16 floods is transformed in one call.
"""

from __future__ import annotations

import os

import numpy as np

from . import sealraw
from .backend import backend
from .errors import ParameterError
from .params import Params
from .smudging import FLOOD_TERMS, MAX_FLOOD_BITS

_PACK = 16  # SEAL's largest ciphertext size: one transform_to_ntt call per 16 floods


def _uniforms(count: int, bits: int) -> np.ndarray:
    """``count`` independent uniform int64 in [-2^bits, 2^bits) (bits <= 62)."""
    words = np.frombuffer(os.urandom(8 * count), dtype="<u8")
    return (words >> np.uint64(63 - bits)).astype(np.int64) - np.int64(1 << bits)


def flood_coefficients(params: Params, bits: int, count: int) -> np.ndarray:
    """``count`` flood polynomials in coefficient form, reduced mod each data prime: shape (count, L, N) uint64."""
    if not 1 <= bits <= MAX_FLOOD_BITS:
        raise ParameterError(f"flood exponent {bits} outside [1, {MAX_FLOOD_BITS}]")
    n = params.poly_modulus_degree
    total = count * n
    primes = params.data_primes
    out = np.empty((count, len(primes), n), dtype=np.uint64)
    if bits <= 60:
        x = sum(_uniforms(total, bits) for _ in range(FLOOD_TERMS))  # |x| < 2^62
        for j, q in enumerate(primes):
            out[:, j, :] = np.mod(x, np.int64(q)).reshape(count, n).astype(np.uint64)
        return out
    high = sum(_uniforms(total, bits - 32) for _ in range(FLOOD_TERMS))  # |high| <= 2^(bits-30) <= 2^63
    low = sum(
        np.frombuffer(os.urandom(4 * total), dtype="<u4").astype(np.uint64) for _ in range(FLOOD_TERMS)
    )  # < 2^34
    for j, q in enumerate(primes):
        qq = np.uint64(q)
        t = np.mod(high, np.int64(q)).astype(np.uint64)
        for _ in range(8):  # t * 2^32 mod q, four bits at a time (t < 2^60 so t << 4 < 2^64)
            t = (t << np.uint64(4)) % qq
        out[:, j, :] = ((t + low) % qq).reshape(count, n)
    return out


def to_ntt(params: Params, coeffs: np.ndarray) -> np.ndarray:
    """NTT form (SEAL's negacyclic transform) of polynomials given mod each data prime: shape (count, L, N)."""
    be = backend(params)
    out = np.empty_like(coeffs)
    ones = np.ones(coeffs.shape[1:], dtype=np.uint64)
    for start in range(0, coeffs.shape[0], _PACK):
        part = coeffs[start : start + _PACK]
        packed = part if part.shape[0] >= 2 else np.stack([part[0], ones])  # size >= 2, not transparent
        ct = sealraw.to_ciphertext(be.ctx_a, be.data_parms_id, packed, params.data_primes, 1.0, ntt=False)
        be.eval_a.transform_to_ntt_inplace(ct)
        out[start : start + part.shape[0]] = sealraw.ciphertext_data(ct)[: part.shape[0]]
    return out


def sample_flood(params: Params, bits: int, count: int) -> np.ndarray:
    """``count`` fresh floods in NTT form, ready to add to decryption shares: shape (count, L, N) uint64."""
    return to_ntt(params, flood_coefficients(params, bits, count))
