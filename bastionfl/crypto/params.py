"""Parameter sets: the two named profiles, validated custom sets, and the error/overflow helpers."""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from functools import cached_property

import tenseal.sealapi as sa

from .errors import ParameterError

_SUPPORTED_DEGREES = (4096, 8192, 16384, 32768)
MIN_SMUDGING_BITS = 16.0
MAX_SMUDGING_BITS = 45.0  # above this the encoder's double-precision FFT truncates the flood's low bits
_ERROR_SIGMAS = 7.0  # max over ~1e9 Gaussian samples stays below 7 standard deviations


@dataclass(frozen=True)
class Params:
    """One xMK-CKKS parameter set: ring degree, data primes, special prime, scale and smudging std (log2)."""

    name: str
    poly_modulus_degree: int
    data_bits: tuple[int, ...]
    special_bits: int
    scale_bits: int
    smudging_bits: float
    extra_bits: int = 60  # one more prime, only in the key-level helper context; nothing is ever published mod it

    @cached_property
    def primes(self) -> tuple[int, ...]:
        """All primes (data, special, extra) as SEAL chooses them; deterministic for (N, bit sizes)."""
        mods = sa.CoeffModulus.Create(
            self.poly_modulus_degree, list(self.data_bits) + [self.special_bits, self.extra_bits]
        )
        return tuple(m.value() for m in mods)

    @cached_property
    def fingerprint(self) -> bytes:
        """16-byte digest of everything both ends must agree on (including SEAL's prime choice)."""
        body = struct.pack(
            "<IIdd", self.poly_modulus_degree, self.scale_bits, self.smudging_bits, float(len(self.data_bits))
        ) + b"".join(struct.pack("<Q", p) for p in self.primes)
        return hashlib.sha256(b"bastionfl/xmkckks/params/v1\x00" + body).digest()[:16]

    @property
    def slots(self) -> int:
        """Complex slots per ciphertext (N/2)."""
        return self.poly_modulus_degree // 2

    @property
    def floats_per_ciphertext(self) -> int:
        """Reals per ciphertext with complex packing (two reals per slot)."""
        return self.poly_modulus_degree

    @property
    def scale(self) -> float:
        """CKKS scale Δ."""
        return float(2.0**self.scale_bits)

    @property
    def smudging_std(self) -> float:
        """Std of the smudging (flooding) noise added to each decryption-share coefficient."""
        return float(2.0**self.smudging_bits)

    @property
    def data_modulus_bits(self) -> float:
        """log2 of the data modulus Q (product of the data primes)."""
        return sum(math.log2(p) for p in self.primes[: len(self.data_bits)])

    @property
    def max_sum_magnitude(self) -> float:
        """Largest |Σ x| per coordinate that decodes correctly: coefficients stay below Q/2 with margin."""
        return float(2.0 ** (self.data_modulus_bits - self.scale_bits - 2.0))

    def check_sum_fits(self, n_clients: int, value_bound: float) -> None:
        """Raise ``ParameterError`` if n clients sending values up to ``value_bound`` could overflow Q."""
        if n_clients < 1 or not (value_bound >= 0) or not math.isfinite(value_bound):
            raise ParameterError("n_clients must be >= 1 and value_bound a finite number >= 0")
        total = n_clients * value_bound
        if total > self.max_sum_magnitude:
            raise ParameterError(
                f"profile {self.name!r}: a sum of {n_clients} values up to {value_bound:g} may reach {total:g}, "
                f"above the decodable bound {self.max_sum_magnitude:g} (log2 Q={self.data_modulus_bits:.1f}, "
                f"scale 2^{self.scale_bits}); rescale the values or use a profile with more data primes"
            )

    def expected_max_error(self, n_clients: int, value_bound: float = 1.0) -> float:
        """Expected worst-case |decoded − true| of a sum of n clients' values in [−bound, bound]."""
        self.check_sum_fits(n_clients, value_bound)
        flood = _ERROR_SIGMAS * self.smudging_std * math.sqrt(n_clients * self.poly_modulus_degree / 2) / self.scale
        fft = n_clients * max(value_bound, 1.0) * 2.0**-40  # double-precision encode/decode of the values
        return flood + fft


def _validate(p: Params) -> Params:
    n = p.poly_modulus_degree
    if n not in _SUPPORTED_DEGREES:
        raise ParameterError(f"poly_modulus_degree must be one of {_SUPPORTED_DEGREES}, got {n}")
    if not p.data_bits or any(not 20 <= b <= 60 for b in p.data_bits):
        raise ParameterError("data_bits: at least one prime, each between 20 and 60 bits")
    if not 20 <= p.special_bits <= 60 or p.special_bits < max(p.data_bits):
        raise ParameterError("special_bits must be 20..60 and at least the largest data prime")
    total = sum(p.data_bits) + p.special_bits
    bound = sa.CoeffModulus.MaxBitCount(n, sa.SEC_LEVEL_TYPE.TC128)
    if total > bound:
        raise ParameterError(
            f"log2(QP) = {total} bits exceeds the 128-bit HE-standard bound of {bound} bits for N={n}: "
            "this parameter set is below 128-bit security"
        )
    if not MIN_SMUDGING_BITS <= p.smudging_bits <= MAX_SMUDGING_BITS:
        raise ParameterError(
            f"smudging_bits must be in [{MIN_SMUDGING_BITS}, {MAX_SMUDGING_BITS}]: smaller floods leak the key "
            "share, larger ones lose bits in the encoder's double-precision FFT"
        )
    if p.scale_bits - p.smudging_bits < 10:
        raise ParameterError("scale_bits must exceed smudging_bits by at least 10 (else the flood swamps the data)")
    if p.scale_bits + 2 >= sum(p.data_bits):
        raise ParameterError("scale_bits must leave at least 2 bits of the data modulus for the values")
    if len(set(p.primes)) != len(p.primes):
        raise ParameterError("SEAL could not find distinct primes for these bit sizes")
    return p


def custom_params(
    poly_modulus_degree: int,
    data_bits: tuple[int, ...] | list[int],
    special_bits: int,
    scale_bits: int,
    smudging_bits: float,
    name: str = "custom",
) -> Params:
    """Build and validate a parameter set; raises ``ParameterError`` with the reason if it is refused."""
    return _validate(
        Params(
            name=name,
            poly_modulus_degree=int(poly_modulus_degree),
            data_bits=tuple(int(b) for b in data_bits),
            special_bits=int(special_bits),
            scale_bits=int(scale_bits),
            smudging_bits=float(smudging_bits),
        )
    )


_PROFILES = {
    "precise": dict(poly_modulus_degree=16384, data_bits=(60, 60), special_bits=60, scale_bits=80, smudging_bits=40),
    "lean": dict(poly_modulus_degree=16384, data_bits=(60,), special_bits=60, scale_bits=50, smudging_bits=20),
}


def get_profile(name: str) -> Params:
    """The named profile: ``precise`` (2×60-bit data, Δ=2^80, σ*=2^40) or ``lean`` (1×60, Δ=2^50, σ*=2^20)."""
    if name not in _PROFILES:
        raise ParameterError(f"unknown profile {name!r}; choose one of {sorted(_PROFILES)}")
    return custom_params(name=name, **_PROFILES[name])  # type: ignore[arg-type]
