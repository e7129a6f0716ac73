"""The three threat-model settings and the client's policy (membership minimum, upload minimum, share cap)."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from enum import Enum

from .errors import ParameterError


class ThreatModel(str, Enum):
    """Which server (and clients) the protocol defends against; the value is the configuration string."""

    HONEST_BUT_CURIOUS = "honest-but-curious"
    MALICIOUS = "malicious"
    MALICIOUS_COLLUDING = "malicious-colluding"

    @classmethod
    def parse(cls, value: str | ThreatModel) -> ThreatModel:
        """The setting named by ``value``; ``ParameterError`` for anything else."""
        try:
            return cls(value)
        except ValueError:
            raise ParameterError(f"unknown threat model {value!r}; choose one of {[m.value for m in cls]}") from None

    @property
    def code(self) -> int:
        """One byte on the wire and in every transcript."""
        return _CODES[self]

    @classmethod
    def from_code(cls, code: int) -> ThreatModel:
        """Inverse of :attr:`code` (``ParameterError`` if unknown)."""
        for model, c in _CODES.items():
            if c == code:
                return model
        raise ParameterError(f"unknown threat model code {code}")

    @property
    def signed(self) -> bool:
        """True where members sign their messages (both malicious settings)."""
        return self is not ThreatModel.HONEST_BUT_CURIOUS


_CODES = {ThreatModel.HONEST_BUT_CURIOUS: 1, ThreatModel.MALICIOUS: 2, ThreatModel.MALICIOUS_COLLUDING: 3}
DEFAULT_THREAT_MODEL = ThreatModel.MALICIOUS


@dataclass(frozen=True)
class ClientPolicy:
    """What a client refuses, whatever the server asks: the settings of the client-side verification.

    ``min_members``: smallest epoch roster accepted (without an authority this is the only membership check).
    ``min_uploads``: smallest upload set U whose sum the client helps decrypt. ``max_shares``: decryption shares
    per key epoch (``EpochPolicy`` rotates sooner in normal operation). ``require_certified_roster``: refuse an
    epoch unless the caller supplies the authority-certified verification keys. ``threshold``: the t-of-n rule
    (``ThresholdRule``) this client accepts; an epoch opened with any other rule is refused.
    """

    threat_model: ThreatModel = DEFAULT_THREAT_MODEL
    min_members: int = 3
    min_uploads: int = 3
    max_shares: int = 64
    require_certified_roster: bool = False
    threshold: object = None  # ThresholdRule: the t-of-n rule this client accepts (None: every member decrypts)

    def __post_init__(self) -> None:
        object.__setattr__(self, "threat_model", ThreatModel.parse(self.threat_model))
        for name, low in (("min_members", 2), ("min_uploads", 2), ("max_shares", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= 100_000:
                raise ParameterError(f"{name} must be an integer in [{low}, 100000], got {value!r}")
        if not isinstance(self.require_certified_roster, bool):
            raise ParameterError("require_certified_roster must be a bool")
        from .threshold import ThresholdRule

        if self.threshold is not None:
            if not isinstance(self.threshold, ThresholdRule):
                raise ParameterError("threshold must be a ThresholdRule or None")
            if not self.threat_model.signed:
                raise ParameterError("t-of-n decryption needs a signed threat model (malicious or malicious-colluding)")
