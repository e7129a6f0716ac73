"""Shamir sharing of RNS polynomials: the matrix-product evaluation equals plain big-integer evaluation and the
nibble-wise Horner evaluation it replaced, any t shares recover the secret and t - 1 do not."""

from __future__ import annotations

import numpy as np
import pytest

from bastionfl.crypto import ParameterError
from bastionfl.crypto.shamir import deal, evaluate, matmul_mod, point_of, recover, uniform_mod

PRIMES_60 = [(1 << 60) - 93, (1 << 59) - 55]  # 60-bit primes (the profiles' size) ...
PRIMES_WIDE = [(1 << 62) - 57, 65537]  # ... and the widest and a small one the evaluation accepts


def _python_eval(coeffs: np.ndarray, primes, points) -> np.ndarray:
    """The reference: Python integers, no overflow possible."""
    t, rows, n = coeffs.shape
    out = np.zeros((len(points), rows, n), dtype=np.uint64)
    for i, x in enumerate(points):
        for j, q in enumerate(primes):
            for k in range(n):
                out[i, j, k] = sum(int(coeffs[d, j, k]) * pow(x, d, q) for d in range(t)) % q
    return out


def _horner_eval(coeffs: np.ndarray, primes, points) -> np.ndarray:
    """The previous dealing arithmetic: Horner's rule, each product by a point built four bits at a time."""
    q = np.asarray(primes, dtype=np.uint64).reshape(len(primes), 1)
    qb = np.broadcast_to(q, coeffs.shape[1:])
    xs = np.asarray(points, dtype=np.uint64).reshape(len(points), 1, 1)
    acc = np.broadcast_to(coeffs[-1], (len(points), *coeffs.shape[1:])).copy()
    top = max(points).bit_length()
    for d in range(coeffs.shape[0] - 2, -1, -1):
        out = np.zeros_like(acc)
        for shift in range(((top + 3) // 4) * 4 - 4, -4, -4):
            nib = (xs >> np.uint64(shift)) & np.uint64(0xF)
            out = np.remainder(out << np.uint64(4), qb)
            out = np.remainder(out + np.remainder(acc * nib, qb), qb)
        acc = out + coeffs[d]
        np.subtract(acc, q, out=acc, where=acc >= qb)
    return acc


@pytest.mark.parametrize("primes", [PRIMES_60, PRIMES_WIDE])
@pytest.mark.parametrize("t", [1, 2, 7])
def test_evaluation_equals_big_integers(primes, t):
    coeffs = uniform_mod((t, len(primes), 12), primes)
    coeffs[:, :, 0] = np.asarray(primes, dtype=np.uint64) - np.uint64(1)  # the largest values, every limb full
    points = [1, 2, 3, 1000, (1 << 20) - 1]
    assert np.array_equal(evaluate(coeffs, primes, points), _python_eval(coeffs, primes, points))


def test_evaluation_equals_previous_horner_on_random_inputs():
    rng = np.random.default_rng(7)
    for t, members in ((60, 100), (3, 5), (200, 140)):  # 140 members: more than one chunk of members
        coeffs = uniform_mod((t, len(PRIMES_60), 64), PRIMES_60)
        points = sorted(int(x) for x in rng.choice(1 << 19, size=members, replace=False) + 1)
        assert np.array_equal(evaluate(coeffs, PRIMES_60, points), _horner_eval(coeffs, PRIMES_60, points))


def test_matrix_product_spanning_several_blocks_is_exact():
    q = PRIMES_WIDE[0]
    left = uniform_mod((3, 1, 1100), [q])[:, 0, :]  # 1100 > 2 * 512 summed rows: three float64 blocks
    right = uniform_mod((1100, 1, 2), [q])[:, 0, :]
    left[0] = right[:, 0] = q - 1
    want = [[sum(int(a) * int(b) for a, b in zip(row, col)) % q for col in right.T] for row in left]
    assert matmul_mod(left.tolist(), right, q).tolist() == want


def test_any_t_shares_recover_and_t_minus_one_do_not():
    secret = uniform_mod((len(PRIMES_60), 32), PRIMES_60)
    shares = deal(secret, PRIMES_60, list(range(9)), 5)
    assert shares.shape == (9, len(PRIMES_60), 32)
    for subset in ((0, 1, 2, 3, 4), (8, 6, 4, 2, 0), (1, 3, 5, 7, 8), tuple(range(9))):
        assert np.array_equal(recover({i: shares[i] for i in subset}, PRIMES_60), secret)
    assert not np.array_equal(recover({i: shares[i] for i in (0, 2, 4, 6)}, PRIMES_60), secret)
    again = deal(secret, PRIMES_60, list(range(9)), 5)
    assert not np.array_equal(again, shares)  # fresh random coefficients per dealing


def test_bad_sharing_requests_are_refused():
    secret = uniform_mod((1, 4), PRIMES_60[:1])
    for members, t in (([0, 1, 2], 0), ([0, 1, 2], 4), ([0, 0, 1], 2)):
        with pytest.raises(ParameterError):
            deal(secret, PRIMES_60[:1], members, t)
    with pytest.raises(ParameterError):
        evaluate(np.zeros((2, 1, 4), dtype=np.uint64), [(1 << 63) + 29], [1, 2])
    with pytest.raises(ParameterError):
        point_of(-1)
