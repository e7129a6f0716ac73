"""A client's epoch signing identity (Ed25519 from ``cryptography``) and signature checks.

Each client makes a fresh key at key setup; the verification key travels with its public share and is bound into
the epoch transcript. Every signature covers a purpose label and the message, so a signature made for one step can
never be replayed as another.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from .errors import CryptoFormatError, ParameterError

VK_BYTES = 32
SIG_BYTES = 64
PURPOSES = (b"key-share", b"key-commit", b"key-sketch", b"upload", b"transcript", b"exchange-key")


def _signed_bytes(purpose: bytes, message: bytes) -> bytes:
    if purpose not in PURPOSES:
        raise ParameterError(f"unknown signature purpose {purpose!r}")
    return b"bastionfl/xmkckks/signature/v1\x00" + purpose + b"\x00" + message


class EpochIdentity:
    """One client's Ed25519 signing key for one key epoch. No repr of the secret, no pickling."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self.__key = key
        self.verification_key: bytes = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls) -> EpochIdentity:
        """A fresh key from the operating system's CSPRNG (through OpenSSL)."""
        return cls(Ed25519PrivateKey.generate())

    def sign(self, purpose: bytes, message: bytes) -> bytes:
        """Ed25519 signature of ``purpose || message`` (64 bytes)."""
        return self.__key.sign(_signed_bytes(purpose, message))

    def private_bytes(self) -> bytes:
        """The 32-byte seed, for the client's own local state only."""
        return self.__key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    @classmethod
    def from_private_bytes(cls, seed: bytes) -> EpochIdentity:
        """Inverse of :meth:`private_bytes` (``CryptoFormatError`` if malformed)."""
        try:
            return cls(Ed25519PrivateKey.from_private_bytes(bytes(seed)))
        except ValueError:
            raise CryptoFormatError("epoch signing key: malformed") from None

    def __repr__(self) -> str:
        return f"EpochIdentity(verification_key={self.verification_key[:6].hex()}…)"

    def __reduce__(self) -> object:
        raise TypeError("EpochIdentity holds a secret and cannot be pickled or copied")


def verify(verification_key: bytes, purpose: bytes, message: bytes, signature: bytes) -> bool:
    """True iff ``signature`` is valid for ``purpose || message`` under ``verification_key``."""
    if len(verification_key) != VK_BYTES or len(signature) != SIG_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(bytes(verification_key)).verify(
            bytes(signature), _signed_bytes(purpose, message)
        )
    except (InvalidSignature, ValueError):
        return False
    return True
