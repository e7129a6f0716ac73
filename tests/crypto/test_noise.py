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


def test_direct_encoding_at_the_full_scale_would_leak_float_rounding(precise):
    """Why inputs are quantised at 2^40: SEAL's double-precision encoder at 2^100 rounds each client's vector
    with errors of tens of bits, and sum(encode(x_j)) - encode(sum x_j) would be part of what a share reveals."""
    import tenseal.sealapi as sa

    from bastionfl.crypto import sealraw
    from bastionfl.crypto.backend import backend

    be = backend(precise)
    rng = np.random.default_rng(10)
    xs = [rng.uniform(-1, 1, precise.floats_per_ciphertext) for _ in range(3)]

    def direct(values, scale):
        pt = sa.Plaintext()
        be.encoder_a.encode(np.asarray(values).view(np.complex128).tolist(), be.data_parms_id, scale, pt)
        return sealraw.plaintext_data(pt, 2)

    def gap(scale):
        diff = sub_mod(sum_mod([direct(x, scale) for x in xs], precise.data_primes),
                       direct(np.sum(xs, axis=0), scale), precise.data_primes)
        return coefficients(precise, diff[0]).astype(np.float64)  # first prime: exact while |gap| < q/2

    full, quantised = gap(precise.scale), gap(2.0**40)
    print(f"direct encoding at 2^{precise.scale_bits}: sum of encodings - encoding of the sum, std "
          f"2^{math.log2(full.std()):.1f}; at 2^40 (then lifted exactly): max {np.abs(quantised).max():.0f} unit(s)")
    assert full.std() > 2**30
    assert np.abs(quantised).max() <= 2  # rounding of 3 vectors: at most 1.5 units per coefficient
