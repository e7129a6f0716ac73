"""Shamir secret sharing of RNS polynomials, coefficient-wise modulo each prime, and Lagrange coefficients at 0.

A polynomial given mod primes ``q_0..q_{L-1}`` (shape (L, N), NTT or coefficient form: sharing is linear, so either
works) is shared as ``f(x) = s + a_1 x + ... + a_{t-1} x^{t-1}`` with independent uniform ``a_d`` mod each prime;
member ``j`` receives ``f(x_j)`` at its point ``x_j = j + 1``. Any ``t`` points recover ``s`` by Lagrange
interpolation at 0 (mod each prime, hence mod their product); ``t - 1`` points are independent of ``s``.
Exact arithmetic throughout. Dealing evaluates every member's point at once as a matrix product (powers of the
points times coefficients) in float64 BLAS on 21-bit limbs, exact because every partial sum stays below 2^53, then
recombines the limb products modulo the prime in uint64. A product by a scalar mod q is built four bits at a time.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import numpy as np

from .errors import ParameterError

MAX_POINT = 1 << 20  # evaluation points are member indices + 1: small, and far below every prime


def point_of(member: int) -> int:
    """The evaluation point of a member index (0 is the secret's own point, never a member's)."""
    if not 0 <= member < MAX_POINT - 1:
        raise ParameterError(f"member index {member} out of range for sharing")
    return member + 1


def mulmod_scalar(a: np.ndarray, scalars: Sequence[int], primes: Sequence[int]) -> np.ndarray:
    """``a * c_j mod q_j`` per prime (axis -2 of ``a`` is the prime), exact: values of ``a`` below their prime."""
    out = np.empty_like(a)
    for j, (c, q) in enumerate(zip(scalars, primes)):
        c %= q
        qq = np.uint64(q)
        row = a[..., j, :]
        acc = np.zeros_like(row)
        for shift in range(((c.bit_length() + 3) // 4) * 4 - 4, -4, -4):
            nib = (c >> shift) & 0xF
            acc = (acc << np.uint64(4)) % qq  # acc < 2^60: the shift stays inside 64 bits
            if nib:
                acc = (acc + (row * np.uint64(nib)) % qq) % qq  # row * 15 < 2^64
        out[..., j, :] = acc
    return out


def uniform_mod(shape: tuple[int, ...], primes: Sequence[int]) -> np.ndarray:
    """Uniform values mod each prime (axis -2), by rejection from os.urandom: no modular bias."""
    out = np.empty(shape, dtype=np.uint64)
    for j, q in enumerate(primes):
        bits = q.bit_length()
        sub = out[..., j, :]
        need = sub.size
        got: list[np.ndarray] = []
        while need > 0:
            draw = np.frombuffer(os.urandom(8 * (need + need // 4 + 16)), dtype="<u8") >> np.uint64(64 - bits)
            keep = draw[draw < np.uint64(q)][:need]
            got.append(keep)
            need -= keep.size
        if got:
            sub[...] = np.concatenate(got).reshape(sub.shape)
    return out


LIMB_BITS = 21  # a product of two limbs is below 2^42 ...
BLOCK_ROWS = 512  # ... and a sum of 3 * 512 of them below 2^53: exact in float64 (53-bit mantissa)
CHUNK_MEMBERS = 128  # members evaluated per matrix product: bounds the float64 temporaries


def deal(secret: np.ndarray, primes: Sequence[int], members: Sequence[int], threshold: int) -> np.ndarray:
    """Shares of ``secret`` (L, N) for each member index: shape (len(members), L, N); any ``threshold`` recover it."""
    if not 1 <= threshold <= len(members) or len(set(members)) != len(members):
        raise ParameterError(f"threshold {threshold} for {len(members)} distinct members is out of range")
    coeffs = np.empty((threshold, *secret.shape), dtype=np.uint64)
    coeffs[0] = secret
    coeffs[1:] = uniform_mod((threshold - 1, *secret.shape), primes)
    return evaluate(coeffs, primes, [point_of(m) for m in members])


def evaluate(coeffs: np.ndarray, primes: Sequence[int], points: Sequence[int]) -> np.ndarray:
    """``f(x) = sum_d coeffs[d] x^d`` mod each prime at every point: coeffs (t, L, N) below their primes, out
    (len(points), L, N)."""
    t, rows, n_coeffs = coeffs.shape
    if rows != len(primes) or not all(1 < q < 1 << 63 for q in primes):
        raise ParameterError("sharing needs one coefficient row per prime, each prime below 2^63")
    out = np.empty((len(points), rows, n_coeffs), dtype=np.uint64)
    with _one_blas_thread():
        for j, q in enumerate(primes):
            column = coeffs[:, j, :]
            for lo in range(0, len(points), CHUNK_MEMBERS):
                xs = points[lo:lo + CHUNK_MEMBERS]
                powers = [[pow(x, d, q) for d in range(t)] for x in xs]
                out[lo:lo + len(xs), j, :] = matmul_mod(powers, column, q)
    return out


def _one_blas_thread() -> contextlib.AbstractContextManager[object]:
    """The products are thin (3t rows inside): BLAS threads cost more CPU than they save, most on a busy machine."""
    try:
        from threadpoolctl import threadpool_limits  # installed with scikit-learn
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def matmul_mod(left: Sequence[Sequence[int]], right: np.ndarray, q: int) -> np.ndarray:
    """``left @ right mod q`` exactly: ``left`` (m, k) integers, ``right`` (k, n) uint64, entries below ``q < 2^63``.

    With ``right = sum_u R_u 2^(21u)`` (21-bit limbs) the product is ``sum_u (left 2^(21u) mod q) @ R_u``; the
    left factors, split into their own limbs ``v``, give one float64 product per ``v`` over all ``u`` at once, whose
    entries (sums of at most 3 * 512 products below 2^42) are exact integers; Horner in 2^21 over ``v`` ends it."""
    limbs = -(-q.bit_length() // LIMB_BITS)
    qq = np.uint64(q)
    sums = [np.zeros((len(left), right.shape[1]), dtype=np.uint64) for _ in range(limbs)]
    for lo in range(0, right.shape[0], BLOCK_ROWS):
        block = right[lo:lo + BLOCK_ROWS]
        stacked = np.concatenate(_split(block, limbs))  # (limbs * k, n): row u * k + d is limb u of row d
        scaled = [[(c << (LIMB_BITS * u)) % q for u in range(limbs) for c in row[lo:lo + BLOCK_ROWS]]
                  for row in left]
        for v, part in enumerate(_split(np.array(scaled, dtype=np.uint64).reshape(len(left), -1), limbs)):
            sums[v] += np.matmul(part, stacked).astype(np.uint64)  # < q + 2^53 < 2^64
            np.remainder(sums[v], qq, out=sums[v])
    acc = sums[-1]
    for s in reversed(sums[:-1]):  # acc = acc * 2^21 + s, mod q
        acc = _shift_mod(acc, LIMB_BITS, q)
        acc += s
        np.subtract(acc, qq, out=acc, where=acc >= qq)
    return acc


def _split(a: np.ndarray, limbs: int) -> list[np.ndarray]:
    """The 21-bit limbs of ``a``, least significant first, as float64 (exact)."""
    mask = np.uint64((1 << LIMB_BITS) - 1)
    return [((a >> np.uint64(LIMB_BITS * u)) & mask).astype(np.float64) for u in range(limbs)]


def _shift_mod(a: np.ndarray, bits: int, q: int) -> np.ndarray:
    """``a * 2^bits mod q`` for values below ``q``, as many bits per step as stay inside 64 bits."""
    step, qq = 64 - q.bit_length(), np.uint64(q)
    while bits > 0:
        s = min(step, bits)
        a = np.remainder(a << np.uint64(s), qq)
        bits -= s
    return a


def lagrange_at_zero(members: Sequence[int], primes: Sequence[int]) -> dict[int, list[int]]:
    """For each member index of the decrypting set: its Lagrange coefficient at 0, one value per prime."""
    points = {m: point_of(m) for m in members}
    if len(points) != len(members):
        raise ParameterError("the decrypting set lists a member twice")
    out: dict[int, list[int]] = {}
    for m, x in points.items():
        per_prime = []
        for q in primes:
            num, den = 1, 1
            for other, y in points.items():
                if other != m:
                    num = num * y % q
                    den = den * (y - x) % q
            per_prime.append(num * pow(den, -1, q) % q)
        out[m] = per_prime
    return out


def recover(shares: dict[int, np.ndarray], primes: Sequence[int]) -> np.ndarray:
    """The secret from ``threshold`` or more shares (by member index): for tests and the attack demonstrations."""
    lam = lagrange_at_zero(list(shares), primes)
    q = np.asarray(primes, dtype=np.uint64).reshape(len(primes), 1)
    acc = np.zeros_like(next(iter(shares.values())))
    for m, s in shares.items():
        np.add(acc, mulmod_scalar(s, lam[m], primes), out=acc)
        np.subtract(acc, q, out=acc, where=acc >= np.broadcast_to(q, acc.shape))
    return acc
