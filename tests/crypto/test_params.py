"""Parameter profiles, validation at construction (also through dataclasses.replace), the smudging flood sizes."""

from __future__ import annotations

import dataclasses
import math

import pytest
import tenseal.sealapi as sa

from bastionfl.crypto import ParameterError, Params, custom_params, get_profile
from bastionfl.crypto.backend import backend
from bastionfl.crypto.smudging import HELLINGER_J, hellinger_constant


def test_profiles(precise, lean):
    assert (precise.poly_modulus_degree, precise.data_bits, precise.special_bits) == (16384, (60, 60), 60)
    assert (precise.scale_bits, precise.smudging_bits, precise.smudging_target_bits) == (100, 40, 40)
    assert (lean.poly_modulus_degree, lean.data_bits, lean.scale_bits, lean.smudging_bits) == (16384, (60,), 50, 20)
    assert lean.below_standard and not precise.below_standard
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
    ok = custom_params(32768, [60] * 6, 60, 96, 40)
    assert ok.poly_modulus_degree == 32768


@pytest.mark.parametrize(
    "kwargs,reason",
    [
        (dict(poly_modulus_degree=2048), "poly_modulus_degree"),
        (dict(data_bits=[61]), "data_bits"),
        (dict(special_bits=50), "special_bits"),
        (dict(smudging_bits=3.2), "smudging_bits"),
        (dict(smudging_bits=8), "smudging_bits"),
        (dict(smudging_bits=94), "smudging_bits"),
        (dict(scale_bits=45, smudging_bits=40), "exceed smudging"),
        (dict(scale_bits=119), "leave at least"),
        (dict(scale_bits=80), "error"),  # a 2^-40 flood would swamp a 2^80 scale: refused, not silently weaker
        (dict(smudging_bits=16), None),  # accepted: 16 is only the floor; the flood is sized for 2^-40 anyway
    ],
)
def test_custom_inconsistent_refused(kwargs, reason):
    base = dict(poly_modulus_degree=16384, data_bits=[60, 60], special_bits=60, scale_bits=100, smudging_bits=40)
    base.update(kwargs)
    if reason is None:
        assert custom_params(**base).flood_bits(3, 3, 1) >= 56
        return
    with pytest.raises(ParameterError, match=reason):
        custom_params(**base)


def test_params_cannot_be_built_or_replaced_unvalidated(lean, precise):
    """Validation runs in __post_init__: direct construction and dataclasses.replace are checked too."""
    for bad in (dict(smudging_bits=-math.inf), dict(smudging_bits=math.nan), dict(smudging_bits="20"),
                dict(poly_modulus_degree=4096, data_bits=(60, 60)), dict(data_bits=()), dict(data_bits=(60, "x")),
                dict(smudging_target_bits=20), dict(name="")):
        with pytest.raises(ParameterError):
            dataclasses.replace(lean, **bad)
        with pytest.raises(ParameterError):
            Params(**{**dataclasses.asdict(precise), **bad})
    # an insecure set is a ParameterError before any SEAL object exists (never an AttributeError from the backend)
    with pytest.raises(ParameterError, match="128-bit"):
        Params("x", 8192, (60, 60, 60, 60), 60, 96, 40)
    # a small flood is refused unless the set says plainly it is below the standard
    with pytest.raises(ParameterError):
        custom_params(4096, [40], 40, 30, 16)
    weak = custom_params(4096, [40], 40, 30, 16, below_standard=True)
    assert weak.below_standard and weak.flood_bits(3, 3, 1) == 16
    assert dataclasses.replace(precise, name="copy").fingerprint == precise.fingerprint


def test_flood_meets_the_statistical_target(precise, lean):
    """Default profile: <= 2^-40 per share for any epoch size and length; the flood grows with both."""
    figures = []
    for members, k in ((3, 1), (3, 62), (10, 62), (100, 7), (100, 62)):
        bits = precise.flood_bits(members, members, k)
        sd = precise.share_distance(members, members, k)
        err = precise.expected_max_error(members, 1.0, k)
        figures.append(f"n={members} k={k}: flood 2^{bits} sd<=2^{math.log2(sd):.1f} sum error<={err:.1e}")
        assert sd <= 2.0**-40
    assert precise.flood_bits(3, 3, 62) > precise.flood_bits(3, 3, 1)
    assert precise.flood_bits(100, 100, 62) > precise.flood_bits(3, 3, 62)
    lean_sd = lean.share_distance(3, 3, 1)
    print("precise:", "; ".join(figures))
    print(f"lean (fixed 2^20 flood): sd bound 2^{math.log2(lean_sd):.1f} per one-ciphertext share at n=3, "
          f"2^{math.log2(lean.share_distance(3, 3, 62)):.1f} at 62 ciphertexts (> 1 means no bound at all); "
          f"sum error<={lean.expected_max_error(3, 1.0, 62):.1e} at n=3")
    assert lean_sd > 0.05  # lean offers no meaningful statistical bound, and says so
    assert precise.expected_max_error(3, 1.0, 62) <= 1e-6
    # the Flower layer normalises the FedAvg weights to sum to 1: the mean's error is the sum's
    assert precise.expected_max_error(100, 1.0, 62) <= 1e-6


def test_hellinger_constant_is_pinned():
    """J*sigma^2 of the 4-uniform flood, computed exactly, stays below the constant the bound uses."""
    exact = hellinger_constant(4, 8)
    print(f"J*sigma^2 (4 uniforms, half-range 2^8) = {exact:.5f}; Gaussian 0.25; used {HELLINGER_J}")
    assert 0.25 < exact <= HELLINGER_J
    assert hellinger_constant(4, 10) <= exact


def test_expected_error_and_overflow(precise, lean):
    assert precise.expected_max_error(3, 1.0) < 1e-8
    assert 1e-7 < lean.expected_max_error(3, 1.0) < 2e-6
    assert lean.expected_max_error(10, 1.0) > lean.expected_max_error(3, 1.0)
    assert 2**7 < lean.max_sum_magnitude < 2**9
    assert 2**17 < precise.max_sum_magnitude < 2**19
    with pytest.raises(ParameterError, match="decodable bound"):
        lean.expected_max_error(10, 100.0)  # 1000 > 2^8
    lean.check_sum_fits(10, 10.0)
    with pytest.raises(ParameterError):
        precise.check_sum_fits(3, 2.0**40)
    with pytest.raises(ParameterError):
        precise.check_sum_fits(3, math.inf)
