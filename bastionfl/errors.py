"""The one error root of BastionFL: every room's own errors derive from ``BastionFLError``.

Callers that want "any refusal by BastionFL" catch this class; each room keeps its own hierarchy below it
(``CryptoError``, ``AuthError``, ``ConfigError``, ``DatasetError``, ...), so a handler can still be precise.
"""

from __future__ import annotations

__all__ = ["BastionFLError"]


class BastionFLError(Exception):
    """Base class of every error BastionFL raises on purpose (never for a bug: those stay Python's own types)."""
