"""How large the smudging flood must be: the noise it hides, and the statistical distance it leaves per share.

Pure arithmetic (no SEAL). A decryption share reveals the aggregate's decryption noise ``e`` (it depends on the
secrets) unless a flood ``E`` hides it; the server sees ``E + e`` instead of ``E``. The flood is the sum of
``FLOOD_TERMS`` independent uniform integers in ``[-2^b, 2^b)`` per coefficient (sampled exactly from os.urandom).

Bound (per share, all coefficients of all its ciphertexts): Hellinger distance of a shift by ``e_i`` is at most
``e_i^2 J / 2`` with ``J = sum_x (sqrt p(x+1) - sqrt p(x))^2`` (Cauchy-Schwarz on the telescoping sum); it adds up
over independent coefficients, and SD <= sqrt(2 H^2), so ``SD <= sqrt(J sigma^2) * ||e||_2 / sigma`` where sigma is
the flood's standard deviation. ``J sigma^2`` is a constant of the distribution (0.2597 for 4 terms; a Gaussian has
0.25), recomputed exactly by :func:`hellinger_constant` and pinned by a test.
"""

from __future__ import annotations

import math

import numpy as np

SEAL_NOISE_STD = 3.2  # SEAL's clipped normal for key and encryption errors
FLOOD_TERMS = 4
HELLINGER_J = 0.2597  # J * sigma^2 of the sum of 4 uniforms (hellinger_constant(4) = 0.25962 for half-range 2^8)
SD_COEFFICIENT = math.sqrt(HELLINGER_J)
NOISE_MARGIN = 1.25  # ||e||_2 bound over its expectation; the measured ratio is printed by the noise test
MAX_FLOOD_BITS = 93  # the sampler keeps 4 * 2^(b-32) inside int64


def fresh_noise_variance(poly_degree: int, members: int) -> float:
    """Variance of one coefficient of ``c0 + s~ c1 - Delta m`` for one fresh ciphertext under the epoch's key.

    ``u e~ + e0 + s~ e1`` with ``u, s_i`` uniform ternary (variance 2/3), ``e~ = sum of members' key errors``:
    ``sigma^2 (1 + (4/3) members N)``.
    """
    return SEAL_NOISE_STD**2 * (1.0 + (4.0 / 3.0) * members * poly_degree)


def aggregate_noise_l2(poly_degree: int, uploads: int, members: int, ciphertexts: int) -> float:
    """High-probability bound on ||e||_2 over all coefficients of an aggregate of ``uploads`` fresh updates.

    Expectation ``sqrt(k N uploads var)`` times ``NOISE_MARGIN``, plus the encoder's rounding (<= 1/2 per upload
    and coefficient).
    """
    count = ciphertexts * poly_degree
    expected = math.sqrt(count * uploads * fresh_noise_variance(poly_degree, members))
    return NOISE_MARGIN * expected + 0.5 * uploads * math.sqrt(count)


def flood_std(bits: int) -> float:
    """Standard deviation of the flood: the sum of FLOOD_TERMS uniforms in [-2^bits, 2^bits)."""
    return float(2.0**bits) * math.sqrt(FLOOD_TERMS / 3.0)


def statistical_distance(noise_l2: float, bits: int) -> float:
    """Upper bound on the statistical distance one share leaves, for noise of l2 norm ``noise_l2``."""
    return SD_COEFFICIENT * noise_l2 / flood_std(bits)


def required_flood_bits(
    poly_degree: int, uploads: int, members: int, ciphertexts: int, target_bits: float
) -> int:
    """Smallest flood exponent whose share leaves statistical distance <= 2^-target_bits."""
    l2 = aggregate_noise_l2(poly_degree, uploads, members, ciphertexts)
    need = math.log2(SD_COEFFICIENT * l2 / math.sqrt(FLOOD_TERMS / 3.0)) + target_bits
    return max(1, math.ceil(need))


def hellinger_constant(terms: int = FLOOD_TERMS, half_range_bits: int = 8) -> float:
    """``J sigma^2`` of the discrete sum of ``terms`` uniforms on [-2^k, 2^k), computed exactly by convolution.

    It decreases towards the continuous value as k grows; k = 8 already matches it to 4 digits.
    """
    width = 2 ** (half_range_bits + 1)
    one = np.full(width, 1.0 / width)
    p = one
    for _ in range(terms - 1):
        p = np.convolve(p, one)
    root = np.sqrt(np.clip(p, 0.0, None))
    j = float(np.sum(np.diff(np.concatenate([[0.0], root, [0.0]])) ** 2))
    var = terms * (width**2 - 1) / 12.0
    return j * var
