"""Smudging (noise-flooding) noise from the operating system's CSPRNG, encoded as i.i.d. Gaussian coefficients."""

from __future__ import annotations

import math
import os

import numpy as np
import tenseal.sealapi as sa

_TWO_POW_M53 = 2.0**-53


def csprng_gaussian(count: int, std: float) -> np.ndarray:
    """``count`` i.i.d. N(0, std²) floats by Box–Muller on 53-bit uniforms from ``os.urandom`` (not numpy's PRNG)."""
    pairs = (count + 1) // 2
    words = np.frombuffer(os.urandom(16 * pairs), dtype="<u8")
    u1 = ((words[:pairs] >> np.uint64(11)).astype(np.float64) + 0.5) * _TWO_POW_M53  # (0, 1): log is finite
    u2 = (words[pairs:] >> np.uint64(11)).astype(np.float64) * _TWO_POW_M53
    radius = np.sqrt(-2.0 * np.log(u1)) * std
    angle = (2.0 * math.pi) * u2
    out = np.empty(2 * pairs, dtype=np.float64)
    out[0::2] = radius * np.cos(angle)
    out[1::2] = radius * np.sin(angle)
    return out[:count]


def smudging_plaintext(
    encoder: sa.CKKSEncoder, poly_degree: int, parms_id: list[int], scale: float, std: float
) -> sa.Plaintext:
    """A plaintext whose coefficients are i.i.d. rounded Gaussians of std ``std``, carrying ``scale``.

    Slot values of std ``std·sqrt(N/2)`` per real/imaginary part encode (at scale 1) to coefficients of std ``std``.
    """
    slots = poly_degree // 2
    z = csprng_gaussian(2 * slots, std * math.sqrt(slots)).view(np.complex128)
    pt = sa.Plaintext()
    encoder.encode(z.tolist(), parms_id, 1.0, pt)
    pt.scale = scale  # add_plain requires equal scales; the flood is an additive error, not a scaled message
    return pt
