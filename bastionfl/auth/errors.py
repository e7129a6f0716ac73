"""Typed errors of the authentication library.

Protocol failures never raise on the wire path (the HA answers with a decoy, the client with random bytes); these
errors are for callers that hand the library malformed local input or misuse an object.
"""

from __future__ import annotations

from bastionfl.errors import BastionFLError

__all__ = ["AuthError", "MalformedInput", "RateLimited", "CredentialError"]


class AuthError(BastionFLError):
    """Base class of every error raised by ``bastionfl.auth``."""


class MalformedInput(AuthError, ValueError):
    """A message, request or encoded object does not parse; the text never contains the offending bytes."""


class RateLimited(AuthError):
    """A per-server quota at the Home Authority is exhausted; retry later (no lockout)."""


class CredentialError(AuthError):
    """A client credential file is missing, unreadable, malformed or has unsafe permissions."""
