"""Random linear sketch: checks that an aggregate equals the sum of signed components without downloading them.

Challenge: ``rho`` = AES-256-CTR keystream keyed by ``H(label, transcript)``, where the transcript already contains
the digest of the aggregate (Fiat-Shamir: the challenge exists only after the server committed to it). Each of
``SKETCH_SCALARS`` rows of rho has one 20-bit entry per coefficient (all ciphertexts concatenated); the sketch of a
polynomial array is ``<rho_t, c_p> mod q_p`` for every prime p and row t. Sketches are linear, so the members'
sketches of their own components must sum to the sketch of the aggregate.

Soundness: for an aggregate off by delta != 0, some prime has delta_p != 0; fixing every entry of rho_t but one on a
non-zero coordinate, ``<rho_t, delta_p> = 0 mod q_p`` (q_p prime > 2^20) holds for at most one of 2^20 values, so
each row passes with probability <= 2^-20, all ``SKETCH_SCALARS`` = 10 rows with <= 2^-200. A server that grinds
2^64 aggregates (each a fresh challenge, modelling the hash as a random oracle) passes with <= 2^64 * 2^-200 =
2^-136 (>= 128-bit soundness).

Arithmetic: coefficients (< 2^60) are split into three 20-bit limbs; limb dot products over runs of 2^13 entries
are below 2^53, hence exact in float64 (so BLAS does them), and are summed in int64 per block of 2^18 entries
(< 2^58); limbs are recombined and reduced with Python integers.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import CryptoFormatError
from .transcript import hash_parts

SKETCH_SCALARS = 10
RHO_BITS = 20
SOUNDNESS_BITS = SKETCH_SCALARS * RHO_BITS - 64  # after 2^64 grinding attempts: 136
_BLOCK = 1 << 18
_RUN = 1 << 13  # 2^13 products of two 20-bit numbers stay below 2^53: exact in float64
_MASK = (1 << RHO_BITS) - 1


def challenge_key(label: bytes, transcript: bytes) -> bytes:
    """The 32-byte AES key of the challenge, derived from a transcript that already binds the aggregate."""
    return hash_parts(b"sketch-challenge", label, transcript)


def _rho_block(key: bytes, block: int, count: int, scalars: int) -> np.ndarray:
    """Rows of rho for the coefficient positions of block ``block``: shape (scalars, count), entries < 2^20 (float).

    Block b uses the keystream from AES block ``b * _BLOCK * scalars / 4`` on, laid out row by row.
    """
    first = block * _BLOCK * scalars * 4 // 16
    enc = Cipher(algorithms.AES(key), modes.CTR(first.to_bytes(16, "big"))).encryptor()
    words = np.frombuffer(enc.update(bytes(4 * count * scalars)), dtype="<u4")
    return (words & np.uint32(_MASK)).astype(np.float64).reshape(scalars, count)


def sketch(coeffs: np.ndarray, primes: tuple[int, ...] | list[int], key: bytes, scalars: int = SKETCH_SCALARS) -> np.ndarray:
    """Sketch of ``coeffs`` (shape (k, P, N), P = len(primes)): shape (P, scalars) uint64, entries mod q_p."""
    if coeffs.ndim != 3 or coeffs.shape[1] != len(primes):
        raise CryptoFormatError("sketch: coefficient array of an unexpected shape")
    k, nprimes, n = coeffs.shape
    total = k * n
    flat = np.ascontiguousarray(np.moveaxis(coeffs, 1, 0)).reshape(nprimes, total)
    acc = [[0] * scalars for _ in range(nprimes)]
    for block, start in enumerate(range(0, total, _BLOCK)):
        count = min(_BLOCK, total - start)
        pad = (-count) % _RUN
        runs = (count + pad) // _RUN
        rho = _rho_block(key, block, count, scalars)
        if pad:
            rho = np.concatenate([rho, np.zeros((scalars, pad))], axis=1)
        rho = rho.reshape(scalars, runs, _RUN)
        for p in range(nprimes):
            v = flat[p, start : start + count]
            limbs = np.zeros((3, count + pad), dtype=np.float64)
            limbs[0, :count] = v & np.uint64(_MASK)
            limbs[1, :count] = (v >> np.uint64(20)) & np.uint64(_MASK)
            limbs[2, :count] = v >> np.uint64(40)
            per_run = np.einsum("tjx,ljx->jtl", rho, limbs.reshape(3, runs, _RUN), optimize=True)  # each < 2^53
            dots = per_run.astype(np.int64).sum(axis=0)  # (scalars, 3), < 2^58: exact
            for t in range(scalars):
                acc[p][t] += int(dots[t, 0]) + (int(dots[t, 1]) << 20) + (int(dots[t, 2]) << 40)
    return np.array([[a % q for a in row] for row, q in zip(acc, primes)], dtype=np.uint64)


def sketch_sum(sketches: list[np.ndarray], primes: tuple[int, ...] | list[int]) -> np.ndarray:
    """Sum of sketches mod each prime (shape (P, scalars))."""
    q = np.asarray(primes, dtype=object).reshape(len(primes), 1)
    total = np.zeros(sketches[0].shape, dtype=object)
    for s in sketches:
        total = (total + s.astype(object)) % q
    return total.astype(np.uint64)


def sketch_bytes(s: np.ndarray) -> bytes:
    """Canonical bytes of a sketch (signed by its member)."""
    return np.ascontiguousarray(s, dtype="<u8").tobytes()
