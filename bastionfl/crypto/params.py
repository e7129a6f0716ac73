"""Parameter sets: the two named profiles, validated custom sets, the smudging flood and the error/overflow helpers.

A ``Params`` is validated when it is constructed (``__post_init__``), so ``dataclasses.replace`` cannot produce an
unvalidated set, and every refusal is a ``ParameterError`` (SEAL is only asked about sets that passed the checks).
"""

from __future__ import annotations

import hashlib
import math
import numbers
import struct
from dataclasses import dataclass
from functools import cached_property

import tenseal.sealapi as sa

from . import smudging
from .errors import ParameterError

_SUPPORTED_DEGREES = (4096, 8192, 16384, 32768)
MIN_SMUDGING_BITS = 16  # a below-standard set's fixed flood may not be smaller than this
MIN_TARGET_BITS = 40  # a standard set's shares leave statistical distance <= 2^-40 each
_ERROR_SIGMAS = 7.0  # max over ~1e9 Gaussian-like samples stays below 7 standard deviations
_REFERENCE_CLIENTS = 3  # a standard set must keep the FedAvg error of 3 clients below 1e-6
_MAX_REFERENCE_ERROR = 1e-6


@dataclass(frozen=True)
class Params:
    """One xMK-CKKS parameter set: ring degree, data primes, special prime, scale and smudging flood (log2).

    ``smudging_target_bits`` > 0 (a standard set): each share's flood is sized so that the share leaves statistical
    distance <= 2^-target (:meth:`flood_bits`), never below ``2^smudging_bits``. ``smudging_target_bits`` == 0: a
    below-standard set with the fixed flood ``2^smudging_bits`` and no statistical guarantee (``lean``).
    """

    name: str
    poly_modulus_degree: int
    data_bits: tuple[int, ...]
    special_bits: int
    scale_bits: int
    smudging_bits: int
    smudging_target_bits: int = MIN_TARGET_BITS
    extra_bits: int = 60  # one more prime, only in the key-level helper context; nothing is ever published mod it

    def __post_init__(self) -> None:
        _validate(self)

    @cached_property
    def primes(self) -> tuple[int, ...]:
        """All primes (data, special, extra) as SEAL chooses them; deterministic for (N, bit sizes)."""
        try:
            mods = sa.CoeffModulus.Create(
                self.poly_modulus_degree, list(self.data_bits) + [self.special_bits, self.extra_bits]
            )
        except Exception as exc:  # SEAL raises when it cannot find enough primes of these sizes
            raise ParameterError(f"SEAL cannot choose primes for these bit sizes ({exc})") from None
        return tuple(m.value() for m in mods)

    @cached_property
    def fingerprint(self) -> bytes:
        """16-byte digest of everything both ends must agree on (including SEAL's prime choice)."""
        body = struct.pack(
            "<IIiiI",
            self.poly_modulus_degree,
            self.scale_bits,
            self.smudging_bits,
            self.smudging_target_bits,
            len(self.data_bits),
        ) + b"".join(struct.pack("<Q", p) for p in self.primes)
        return hashlib.sha256(b"bastionfl/xmkckks/params/v2\x00" + body).digest()[:16]

    @property
    def data_primes(self) -> tuple[int, ...]:
        """The data primes (the ciphertext modulus Q is their product)."""
        return self.primes[: len(self.data_bits)]

    @property
    def key_primes(self) -> tuple[int, ...]:
        """Data primes plus the special prime: the modulus of public-key shares."""
        return self.primes[: len(self.data_bits) + 1]

    @property
    def below_standard(self) -> bool:
        """True for a fixed flood without a statistical guarantee (``lean``)."""
        return self.smudging_target_bits == 0

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
        """CKKS scale Delta."""
        return float(2.0**self.scale_bits)

    @property
    def smudging_std(self) -> float:
        """Std of the smallest flood this set adds per share coefficient (the fixed flood of a below-standard set)."""
        return smudging.flood_std(self.smudging_bits)

    def flood_bits(self, members: int, uploads: int, ciphertexts: int) -> int:
        """Flood exponent b of one share (uniform terms in [-2^b, 2^b)) for this epoch size, upload set and length."""
        if self.below_standard:
            return self.smudging_bits
        need = smudging.required_flood_bits(
            self.poly_modulus_degree, uploads, members, ciphertexts, self.smudging_target_bits
        )
        if need > smudging.MAX_FLOOD_BITS:
            raise ParameterError(
                f"a share of {ciphertexts} ciphertexts for {members} members needs a 2^{need} flood, above the "
                f"sampler's 2^{smudging.MAX_FLOOD_BITS}: split the vector or use fewer members per epoch"
            )
        return max(self.smudging_bits, need)

    def share_distance(self, members: int, uploads: int, ciphertexts: int) -> float:
        """Statistical distance bound one share leaves (2^-target or less for a standard set; > 0.1 for ``lean``)."""
        l2 = smudging.aggregate_noise_l2(self.poly_modulus_degree, uploads, members, ciphertexts)
        return smudging.statistical_distance(l2, self.flood_bits(members, uploads, ciphertexts))

    @property
    def data_modulus_bits(self) -> float:
        """log2 of the data modulus Q (product of the data primes)."""
        return sum(math.log2(p) for p in self.data_primes)

    @property
    def max_sum_magnitude(self) -> float:
        """Largest |sum x| per coordinate that decodes correctly: coefficients stay below Q/2 with margin."""
        return float(2.0 ** (self.data_modulus_bits - self.scale_bits - 2.0))

    def check_sum_fits(self, n_clients: int, value_bound: float) -> None:
        """Raise ``ParameterError`` if n clients sending values up to ``value_bound`` could overflow Q."""
        if not isinstance(n_clients, numbers.Integral) or n_clients < 1:
            raise ParameterError("n_clients must be an integer >= 1")
        if not isinstance(value_bound, numbers.Real) or not (value_bound >= 0) or not math.isfinite(value_bound):
            raise ParameterError("value_bound must be a finite number >= 0")
        total = n_clients * float(value_bound)
        if total > self.max_sum_magnitude:
            raise ParameterError(
                f"profile {self.name!r}: a sum of {n_clients} values up to {value_bound:g} may reach {total:g}, "
                f"above the decodable bound {self.max_sum_magnitude:g} (log2 Q={self.data_modulus_bits:.1f}, "
                f"scale 2^{self.scale_bits}); rescale the values or use a profile with more data primes"
            )

    def expected_max_error(self, n_clients: int, value_bound: float = 1.0, ciphertexts: int = 1) -> float:
        """Expected worst-case |decoded - true| of a sum of n clients' values in [-bound, bound].

        Flood of every share (n of them), the aggregate's own noise, and double-precision encode/decode.
        """
        self.check_sum_fits(n_clients, value_bound)
        fft = n_clients * max(float(value_bound), 1.0) * 2.0**-40
        return self.noise_error(n_clients, n_clients, ciphertexts) + fft

    def noise_error(self, members: int, uploads: int, ciphertexts: int) -> float:
        """Expected worst-case decoding error from the floods of ``members`` shares and the aggregate's noise."""
        half = math.sqrt(self.poly_modulus_degree / 2)
        flood = smudging.flood_std(self.flood_bits(members, uploads, ciphertexts)) * math.sqrt(members)
        noise = math.sqrt(uploads * smudging.fresh_noise_variance(self.poly_modulus_degree, members))
        return _ERROR_SIGMAS * (flood + noise) * half / self.scale


def _integral(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(f"{what} must be an integer, got {type(value).__name__}")
    if not math.isfinite(float(value)) or float(value) != int(value):  # type: ignore[arg-type]
        raise ParameterError(f"{what} must be a finite integer, got {value!r}")
    return int(value)  # type: ignore[arg-type]


def _validate(p: Params) -> None:
    set_ = lambda field, value: object.__setattr__(p, field, value)
    if not isinstance(p.name, str) or not p.name:
        raise ParameterError("name must be a non-empty string")
    for field in ("poly_modulus_degree", "special_bits", "scale_bits", "smudging_bits", "smudging_target_bits",
                  "extra_bits"):
        set_(field, _integral(getattr(p, field), field))
    if isinstance(p.data_bits, (str, bytes)) or not hasattr(p.data_bits, "__iter__"):
        raise ParameterError("data_bits must be a sequence of integers")
    set_("data_bits", tuple(_integral(b, "data_bits") for b in p.data_bits))
    n = p.poly_modulus_degree
    if n not in _SUPPORTED_DEGREES:
        raise ParameterError(f"poly_modulus_degree must be one of {_SUPPORTED_DEGREES}, got {n}")
    if not p.data_bits or any(not 20 <= b <= 60 for b in p.data_bits):
        raise ParameterError("data_bits: at least one prime, each between 20 and 60 bits")
    if not 20 <= p.special_bits <= 60 or p.special_bits < max(p.data_bits):
        raise ParameterError("special_bits must be 20..60 and at least the largest data prime")
    if not 20 <= p.extra_bits <= 60:
        raise ParameterError("extra_bits must be 20..60")
    total = sum(p.data_bits) + p.special_bits
    bound = sa.CoeffModulus.MaxBitCount(n, sa.SEC_LEVEL_TYPE.TC128)
    if total > bound:
        raise ParameterError(
            f"log2(QP) = {total} bits exceeds the 128-bit HE-standard bound of {bound} bits for N={n}: "
            "this parameter set is below 128-bit security"
        )
    if p.scale_bits < 20 or p.scale_bits + 2 >= sum(p.data_bits):
        raise ParameterError("scale_bits must be >= 20 and leave at least 2 bits of the data modulus for the values")
    if not MIN_SMUDGING_BITS <= p.smudging_bits <= smudging.MAX_FLOOD_BITS:
        raise ParameterError(
            f"smudging_bits must be in [{MIN_SMUDGING_BITS}, {smudging.MAX_FLOOD_BITS}]: smaller floods leak the "
            "key share outright"
        )
    if p.smudging_target_bits != 0 and p.smudging_target_bits < MIN_TARGET_BITS:
        raise ParameterError(
            f"smudging_target_bits must be >= {MIN_TARGET_BITS} (statistical distance per share), or 0 for an "
            "explicitly below-standard set"
        )
    if p.scale_bits - p.smudging_bits < 10:
        raise ParameterError("scale_bits must exceed smudging_bits by at least 10 (else the flood swamps the data)")
    if len(set(p.primes)) != len(p.primes):
        raise ParameterError("SEAL could not find distinct primes for these bit sizes")
    if not p.below_standard:
        try:
            err = p.expected_max_error(_REFERENCE_CLIENTS, 1.0)
        except ParameterError as exc:
            raise ParameterError(f"the smudging target cannot be met: {exc}") from None
        if err > _MAX_REFERENCE_ERROR:
            raise ParameterError(
                f"with a flood meeting statistical distance 2^-{p.smudging_target_bits} per share, the sum of "
                f"{_REFERENCE_CLIENTS} clients decodes with error {err:.1e} > {_MAX_REFERENCE_ERROR:g}: raise "
                "scale_bits (and the data modulus), or build an explicitly below-standard set"
            )


def custom_params(
    poly_modulus_degree: int,
    data_bits: tuple[int, ...] | list[int],
    special_bits: int,
    scale_bits: int,
    smudging_bits: int = 40,
    name: str = "custom",
    below_standard: bool = False,
) -> Params:
    """Build and validate a parameter set; ``ParameterError`` with the reason if it is refused.

    By default the flood must meet 2^-40 statistical distance per share with a FedAvg error <= 1e-6;
    ``below_standard=True`` accepts a fixed flood of 2^smudging_bits without that guarantee (tests, ``lean``).
    """
    if isinstance(data_bits, (str, bytes)) or not hasattr(data_bits, "__iter__"):
        raise ParameterError("data_bits must be a sequence of integers")
    return Params(
        name=name,
        poly_modulus_degree=poly_modulus_degree,
        data_bits=tuple(data_bits),
        special_bits=special_bits,
        scale_bits=scale_bits,
        smudging_bits=smudging_bits,
        smudging_target_bits=0 if below_standard else MIN_TARGET_BITS,
    )


_PROFILES: dict[str, dict[str, object]] = {
    "precise": dict(poly_modulus_degree=16384, data_bits=(60, 60), special_bits=60, scale_bits=100, smudging_bits=40),
    "lean": dict(
        poly_modulus_degree=16384, data_bits=(60,), special_bits=60, scale_bits=50, smudging_bits=20,
        below_standard=True,
    ),
}


def get_profile(name: str) -> Params:
    """The named profile: ``precise`` (default; 2x60-bit data, Delta=2^100, flood sized for 2^-40 per share) or
    ``lean`` (1x60, Delta=2^50, fixed 2^20 flood: below that standard)."""
    if name not in _PROFILES:
        raise ParameterError(f"unknown profile {name!r}; choose one of {sorted(_PROFILES)}")
    return custom_params(name=name, **_PROFILES[name])  # type: ignore[arg-type]
