"""Typed errors of the crypto room: callers catch ``CryptoError`` and never a SEAL or numpy exception."""

from __future__ import annotations

from bastionfl.errors import BastionFLError


class CryptoError(BastionFLError):
    """Base class of every error raised by ``bastionfl.crypto``."""


class ParameterError(CryptoError):
    """Parameters refused (below the 128-bit bound, inconsistent) or values that would overflow the modulus."""


class CryptoFormatError(CryptoError):
    """Bytes that are truncated, corrupted, of another version, kind, parameter set or length."""


class IncompleteShareSetError(CryptoError):
    """Fusion was asked to decode without one valid decryption share from every participant."""


class VerificationError(CryptoError):
    """A decryption request failed the client's checks (forged C1, bad component list, replay)."""


class EpochError(CryptoError):
    """An object belongs to another key epoch (or to none): old shares and keys are refused."""
