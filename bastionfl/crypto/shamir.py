"""Shamir secret sharing of RNS polynomials, coefficient-wise modulo each prime, and Lagrange coefficients at 0.

A polynomial given mod primes ``q_0..q_{L-1}`` (shape (L, N), NTT or coefficient form: sharing is linear, so either
works) is shared as ``f(x) = s + a_1 x + ... + a_{t-1} x^{t-1}`` with independent uniform ``a_d`` mod each prime;
member ``j`` receives ``f(x_j)`` at its point ``x_j = j + 1``. Any ``t`` points recover ``s`` by Lagrange
interpolation at 0 (mod each prime, hence mod their product); ``t - 1`` points are independent of ``s``.
Exact uint64 arithmetic: a product mod q (< 2^60) is built four bits of the multiplier at a time.
"""

from __future__ import annotations

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


def deal(secret: np.ndarray, primes: Sequence[int], members: Sequence[int], threshold: int) -> np.ndarray:
    """Shares of ``secret`` (L, N) for each member index: shape (len(members), L, N); any ``threshold`` recover it."""
    if not 1 <= threshold <= len(members) or len(set(members)) != len(members):
        raise ParameterError(f"threshold {threshold} for {len(members)} distinct members is out of range")
    coeffs = uniform_mod((threshold - 1, *secret.shape), primes)
    points = [point_of(m) for m in members]
    q = np.asarray(primes, dtype=np.uint64).reshape(len(primes), 1)
    acc = np.broadcast_to(coeffs[-1] if threshold > 1 else secret, (len(members), *secret.shape)).copy()
    for d in range(threshold - 2, -1, -1):  # Horner: acc = acc * x + a_d, coeffs[d - 1] = a_d, a_0 = secret
        term = coeffs[d - 1] if d >= 1 else secret
        acc = _mulmod_points(acc, points, q)
        np.add(acc, term, out=acc)
        np.subtract(acc, q, out=acc, where=acc >= np.broadcast_to(q, acc.shape))
    return acc


def _mulmod_points(acc: np.ndarray, points: Sequence[int], q: np.ndarray) -> np.ndarray:
    """``acc[i] * points[i] mod q`` for every member ``i`` at once (points < 2^20: five nibbles)."""
    xs = np.asarray(points, dtype=np.uint64).reshape(len(points), 1, 1)
    qb = np.broadcast_to(q, acc.shape[1:])
    out = np.zeros_like(acc)
    top = max(points).bit_length()
    for shift in range(((top + 3) // 4) * 4 - 4, -4, -4):
        nib = (xs >> np.uint64(shift)) & np.uint64(0xF)
        out = np.remainder(out << np.uint64(4), qb)
        out = np.remainder(out + np.remainder(acc * nib, qb), qb)
    return out


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
