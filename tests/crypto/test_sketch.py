"""The random linear sketch: exact arithmetic, linearity, soundness constants, challenge derivation; signatures."""

from __future__ import annotations

import time

import numpy as np
import pytest

from bastionfl.crypto import ParameterError
from bastionfl.crypto import sketch as sk
from bastionfl.crypto.identity import EpochIdentity, verify
from bastionfl.crypto.polyarith import add_mod, sub_mod
from bastionfl.crypto.transcript import hash_parts


def _random(params, k, rng):
    return np.stack([rng.integers(0, q, size=(k, params.poly_modulus_degree), dtype=np.uint64)
                     for q in params.data_primes], axis=1)


def test_soundness_constants():
    """10 scalars of 20 bits per prime: <= 2^-200 per challenge, <= 2^-136 after 2^64 ground challenges."""
    assert sk.SKETCH_SCALARS * sk.RHO_BITS == 200 and sk.SOUNDNESS_BITS == 136 >= 128


def test_sketch_is_exact_at_every_position(precise):
    """A single coefficient at any position (second block, largest value) gives rho_t[x] * c mod q exactly."""
    key = hash_parts(b"test", b"exact")
    k = 20  # 20 * 16384 entries: two blocks of 2^18
    primes = precise.data_primes
    for (ct, j, x) in ((0, 0, 0), (17, 1, 777), (19, 0, 16383)):
        arr = np.zeros((k, 2, precise.poly_modulus_degree), dtype=np.uint64)
        value = primes[j] - 1
        arr[ct, j, x] = value
        position = ct * precise.poly_modulus_degree + x
        block, offset = divmod(position, 1 << 18)
        count = min(1 << 18, k * precise.poly_modulus_degree - block * (1 << 18))
        rho = sk._rho_block(key, block, count, sk.SKETCH_SCALARS)[:, offset]
        got = sk.sketch(arr, primes, key)
        assert got[j].tolist() == [int(r) * value % primes[j] for r in rho]
        assert got[1 - j].tolist() == [0] * sk.SKETCH_SCALARS


def test_sketch_is_linear_and_catches_any_difference(precise):
    rng = np.random.default_rng(3)
    primes = precise.data_primes
    a, b = _random(precise, 3, rng), _random(precise, 3, rng)
    key = hash_parts(b"test", b"linear")
    total = sk.sketch_sum([sk.sketch(a, primes, key), sk.sketch(b, primes, key)], primes)
    assert np.array_equal(total, sk.sketch(add_mod(a, b, primes), primes, key))
    delta = np.zeros_like(a)
    delta[2, 1, 5] = 1  # the smallest change in one coefficient of one prime
    forged = add_mod(add_mod(a, b, primes), delta, primes)
    for trial in range(20):
        key = hash_parts(b"test", trial.to_bytes(4, "little"))
        assert not np.array_equal(sk.sketch(forged, primes, key), sk.sketch(add_mod(a, b, primes), primes, key))
    assert np.array_equal(sub_mod(forged, delta, primes), add_mod(a, b, primes))


def test_challenge_is_deterministic_and_bound_to_the_transcript():
    k1 = sk.challenge_key(b"round", b"\x01" * 32)
    assert k1 == sk.challenge_key(b"round", b"\x01" * 32)
    assert k1 != sk.challenge_key(b"round", b"\x02" * 32) != sk.challenge_key(b"key", b"\x01" * 32)
    rho = sk._rho_block(k1, 0, 4096, sk.SKETCH_SCALARS)
    assert rho.shape == (10, 4096) and rho.max() < 2**20 and rho.min() >= 0 and len(np.unique(rho)) > 30_000


def test_sketch_cost_per_ciphertext(precise):
    rng = np.random.default_rng(4)
    a = _random(precise, 16, rng)
    start = time.perf_counter()
    sk.sketch(a, precise.data_primes, b"k" * 32)
    per_ct = (time.perf_counter() - start) / 16
    print(f"sketch: {per_ct * 1e3:.2f} ms per ciphertext (N=16384, 2 primes, 10 scalars)")
    assert per_ct < 0.1


def test_signatures_are_purpose_bound():
    ident = EpochIdentity.generate()
    vk = ident.verification_key
    sig = ident.sign(b"upload", b"message")
    assert verify(vk, b"upload", b"message", sig)
    assert not verify(vk, b"transcript", b"message", sig)  # the same bytes signed for another step
    assert not verify(vk, b"upload", b"messagf", sig)
    assert not verify(EpochIdentity.generate().verification_key, b"upload", b"message", sig)
    assert not verify(vk[:31], b"upload", b"message", sig) and not verify(vk, b"upload", b"message", sig[:63])
    restored = EpochIdentity.from_private_bytes(ident.private_bytes())
    assert restored.verification_key == vk
    with pytest.raises(ParameterError):
        ident.sign(b"anything", b"message")
