"""The JSON encoding of the FL server <-> Home Authority channel (hex-encoded bytes), shared by both ends."""

from __future__ import annotations

import json
from collections.abc import Mapping

from .errors import MalformedInput

__all__ = ["MAX_BODY", "load_json_object", "hexfield", "intfield"]

MAX_BODY = 4096  # bytes of one request body


def load_json_object(body: bytes) -> dict:
    """Parse a bounded JSON object body; ``MalformedInput`` otherwise."""
    if not isinstance(body, (bytes, bytearray)) or len(body) > MAX_BODY:
        raise MalformedInput("request body missing or too large")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise MalformedInput("request body is not JSON") from None
    if not isinstance(doc, dict):
        raise MalformedInput("request body must be a JSON object")
    return doc


def hexfield(doc: Mapping, name: str, length: int | None = None) -> bytes:
    """A hex-encoded bytes field of exactly ``length`` bytes (if given); ``MalformedInput`` otherwise."""
    value = doc.get(name)
    if not isinstance(value, str) or len(value) > 2 * MAX_BODY:
        raise MalformedInput(f"field {name!r} must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise MalformedInput(f"field {name!r} must be a hex string") from None
    if length is not None and len(raw) != length:
        raise MalformedInput(f"field {name!r} has the wrong length")
    return raw


def intfield(doc: Mapping, name: str) -> int:
    """An integer field (booleans refused); ``MalformedInput`` otherwise."""
    value = doc.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedInput(f"field {name!r} must be an integer")
    return value
