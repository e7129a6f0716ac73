"""The fresh-encryption noise the smudging flood must hide, measured (run with -s to see the figures)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bastionfl.crypto import encrypt_vector
from bastionfl.crypto.polyarith import sub_mod, sum_mod
from bastionfl.crypto.scheme import encode, partial_decrypt
from bastionfl.crypto.smudging import aggregate_noise_l2, fresh_noise_variance

from .attacks import coefficients
from .conftest import make_epoch


def _noise(params, keys, data, inputs):
    """c0 + s~ c1 - (sum of the clients' quantised inputs), coefficient form (first prime, centred)."""
    shares = [partial_decrypt(params, k._decryptor, np.ascontiguousarray(data[:, 1]), None) for k in keys]
    fused = sum_mod([data[:, 0]] + shares, params.data_primes)[0]
    return coefficients(params, sub_mod(fused, inputs[0], params.data_primes)[0]).astype(np.float64)


@pytest.mark.parametrize("profile", ["lean", "precise"])
def test_fresh_noise_is_within_the_bound_the_flood_is_sized_for(profile, request):
    p = request.getfixturevalue(profile)
    n = 3
    ep = make_epoch(p, n, run_id=f"noise-{profile}")
    rng = np.random.default_rng(9)
    xs = [rng.uniform(-1, 1, p.floats_per_ciphertext) for _ in range(n)]
    evs = [encrypt_vector(ep.apk, x) for x in xs]
    inputs = [encode(p, x) for x in xs]
    single = _noise(p, ep.keys, evs[0].data, inputs[0])
    total = sum_mod([ev.data for ev in evs], p.data_primes)
    agg = _noise(p, ep.keys, total, sum_mod(inputs, p.data_primes))
    l2 = float(np.linalg.norm(agg))
    bound = aggregate_noise_l2(p.poly_modulus_degree, n, n, 1)
    model = math.sqrt(fresh_noise_variance(p.poly_modulus_degree, n))
    print(f"{profile}: fresh ciphertext noise std 2^{math.log2(single.std()):.2f} (model 2^{math.log2(model):.2f}),"
          f" max 2^{math.log2(np.abs(single).max()):.2f}; aggregate of {n}: std 2^{math.log2(agg.std()):.2f},"
          f" max 2^{math.log2(np.abs(agg).max()):.2f}, l2 2^{math.log2(l2):.2f} = {l2 / bound:.2f} of the bound"
          f" 2^{math.log2(bound):.2f} the flood is sized for")
    assert abs(single.std() / model - 1) < 0.1
    assert l2 <= bound
    assert np.abs(agg).max() < 2**14  # far below every flood of a standard set (>= 2^57)
