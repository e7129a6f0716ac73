"""Exact arithmetic on RNS coefficient arrays (``uint64``, last two axes = (prime, coefficient)) and their digests.

Every value is below its prime (< 2^60), so a sum of two fits in uint64 and one conditional subtraction reduces it.
Sums, differences and negations in NTT form are the same as in coefficient form, which is all the server needs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np


def _q(primes: Sequence[int]) -> np.ndarray:
    return np.asarray(primes, dtype=np.uint64).reshape((len(primes), 1))


def add_mod(a: np.ndarray, b: np.ndarray, primes: Sequence[int]) -> np.ndarray:
    """``(a + b) mod q`` per prime."""
    q = _q(primes)
    s = a + b
    return np.where(s >= q, s - q, s)


def add_mod_inplace(acc: np.ndarray, b: np.ndarray, primes: Sequence[int]) -> None:
    """``acc = (acc + b) mod q`` without a new array."""
    q = _q(primes)
    np.add(acc, b, out=acc)
    np.subtract(acc, q, out=acc, where=acc >= np.broadcast_to(q, acc.shape))


def sub_mod(a: np.ndarray, b: np.ndarray, primes: Sequence[int]) -> np.ndarray:
    """``(a - b) mod q`` per prime."""
    return add_mod(a, neg_mod(b, primes), primes)


def neg_mod(a: np.ndarray, primes: Sequence[int]) -> np.ndarray:
    """``-a mod q`` per prime (0 stays 0)."""
    q = _q(primes)
    return np.where(a == 0, a, q - a)


def sum_mod(arrays: Iterable[np.ndarray], primes: Sequence[int]) -> np.ndarray:
    """Sum of arrays of one shape, mod q."""
    it = iter(arrays)
    acc = np.array(next(it), dtype=np.uint64, copy=True)
    for a in it:
        add_mod_inplace(acc, a, primes)
    return acc


def digest(domain: bytes, array: np.ndarray) -> bytes:
    """SHA-256 of a domain tag, the array's shape and its little-endian bytes."""
    h = hashlib.sha256(b"bastionfl/xmkckks/" + domain + b"\x00")
    h.update(len(array.shape).to_bytes(1, "little"))
    for d in array.shape:
        h.update(int(d).to_bytes(8, "little"))
    h.update(np.ascontiguousarray(array, dtype="<u8").data)
    return h.digest()


def centred(values: np.ndarray, q: int) -> np.ndarray:
    """Residues mod q (< 2^63) mapped to (-q/2, q/2] as int64."""
    signed = values.astype(np.int64)
    return np.where(values > np.uint64(q // 2), signed - np.int64(q), signed)
