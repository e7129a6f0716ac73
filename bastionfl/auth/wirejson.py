"""The JSON encoding of the FL server <-> Home Authority channel (hex-encoded bytes), shared by both ends."""

from __future__ import annotations

import json
from collections.abc import Mapping

from .errors import MalformedInput

__all__ = ["MAX_BODY", "MAX_DEPTH", "load_json_object", "hexfield", "intfield"]

MAX_BODY = 4096  # bytes of one request body
MAX_DEPTH = 4  # nesting of arrays/objects in one body (the protocol's bodies are flat objects)


def _depth(body: bytes) -> int:
    """Deepest nesting of ``[``/``{`` outside strings, found without recursion (a parser would recurse)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def load_json_object(body: bytes) -> dict:
    """Parse a bounded JSON object body; ``MalformedInput`` otherwise."""
    if not isinstance(body, (bytes, bytearray)) or len(body) > MAX_BODY:
        raise MalformedInput("request body missing or too large")
    if _depth(bytes(body)) > MAX_DEPTH:
        raise MalformedInput("request body is nested too deeply")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
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
