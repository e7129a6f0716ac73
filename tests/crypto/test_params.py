"""Parameter profiles, custom-parameter validation against the 128-bit bound, error and overflow helpers."""

from __future__ import annotations

import pytest
import tenseal.sealapi as sa

from bastionfl.crypto import ParameterError, custom_params, get_profile
from bastionfl.crypto.backend import backend


def test_profiles(precise, lean):
    assert (precise.poly_modulus_degree, precise.data_bits, precise.special_bits) == (16384, (60, 60), 60)
    assert (precise.scale_bits, precise.smudging_bits) == (80, 40)
    assert (lean.poly_modulus_degree, lean.data_bits, lean.scale_bits, lean.smudging_bits) == (16384, (60,), 50, 20)
    assert precise.fingerprint != lean.fingerprint and len(precise.fingerprint) == 16
    assert get_profile("precise").fingerprint == precise.fingerprint
    with pytest.raises(ParameterError, match="unknown profile"):
        get_profile("fast")


def test_profiles_are_accepted_by_seal_at_128_bits(precise, lean):
    for p in (precise, lean):
        ctx = backend(p).ctx_a
        assert ctx.parameters_set()
        assert sum(p.data_bits) + p.special_bits <= sa.CoeffModulus.MaxBitCount(p.poly_modulus_degree, sa.SEC_LEVEL_TYPE.TC128)


def test_custom_below_128_bits_refused_with_reason():
    with pytest.raises(ParameterError, match="128-bit"):
        custom_params(4096, [60, 60], 60, 80, 40)
    with pytest.raises(ParameterError, match="128-bit"):
        custom_params(16384, [60] * 7, 60, 80, 40)  # 480 > 438 bits
    ok = custom_params(32768, [60] * 6, 60, 80, 40)
    assert ok.poly_modulus_degree == 32768


@pytest.mark.parametrize(
    "kwargs,reason",
    [
        (dict(poly_modulus_degree=2048), "poly_modulus_degree"),
        (dict(data_bits=[61]), "data_bits"),
        (dict(special_bits=50), "special_bits"),
        (dict(smudging_bits=3.2), "smudging_bits"),
        (dict(smudging_bits=50), "smudging_bits"),
        (dict(scale_bits=45, smudging_bits=40), "exceed smudging"),
        (dict(scale_bits=119), "leave at least"),
    ],
)
def test_custom_inconsistent_refused(kwargs, reason):
    base = dict(poly_modulus_degree=16384, data_bits=[60, 60], special_bits=60, scale_bits=80, smudging_bits=40)
    base.update(kwargs)
    with pytest.raises(ParameterError, match=reason):
        custom_params(**base)


def test_expected_error_and_overflow(precise, lean):
    assert precise.expected_max_error(3, 1.0) < 1e-8
    assert 1e-7 < lean.expected_max_error(3, 1.0) < 2e-6
    assert lean.expected_max_error(10, 1.0) > lean.expected_max_error(3, 1.0)
    assert 2**7 < lean.max_sum_magnitude < 2**9
    with pytest.raises(ParameterError, match="decodable bound"):
        lean.expected_max_error(10, 100.0)  # 1000 > 2^8
    lean.check_sum_fits(10, 10.0)
    with pytest.raises(ParameterError):
        precise.check_sum_fits(3, 2.0**40)
