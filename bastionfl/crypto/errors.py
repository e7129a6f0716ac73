"""Typed errors of the crypto room: callers catch ``CryptoError`` and never a SEAL, numpy or OpenSSL exception."""

from __future__ import annotations

from bastionfl.errors import BastionFLError


class CryptoError(BastionFLError):
    """Base class of every error raised by ``bastionfl.crypto``."""


class ParameterError(CryptoError):
    """Parameters refused (below the 128-bit bound, inconsistent) or values that would overflow the modulus."""


class BackendError(CryptoError):
    """The SEAL backend refused an operation or produced an object of an unexpected shape or level."""


class CryptoFormatError(CryptoError):
    """Bytes that are truncated, corrupted, of another version, kind, parameter set or length."""


class IncompleteShareSetError(CryptoError):
    """Fusion was asked to decode without one valid decryption share from every participant."""


class VerificationError(CryptoError):
    """A message failed a check (forged aggregate, bad signature, inconsistent transcript, replay)."""


class RosterError(VerificationError):
    """The epoch's members are not the certified roster, or fewer than the configured minimum."""


class ReplayError(VerificationError):
    """A second share for the same round or aggregate, a second transcript for a round, or the share cap reached."""


class ProtocolStateError(CryptoError):
    """A protocol step was called out of order or in a threat model that does not have it."""


class RangeCheckError(CryptoError):
    """The decoded sum exceeds the bound the clients declared: a malformed ciphertext or an overflow."""


class EpochError(CryptoError):
    """An object belongs to another key epoch (or to none): old shares and keys are refused."""
