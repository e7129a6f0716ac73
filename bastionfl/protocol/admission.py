"""The admission protocol's vocabulary: handshake record names and steps, and the canonical digest of a message's
content that session tags cover. Shared by the server's admission stage and the client's Mod."""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from flwr.app import ArrayRecord, RecordDict

from bastionfl.auth import digest_records

__all__ = ["HANDSHAKE_RECORD", "TAG_RECORD", "STEP_START", "STEP_RESPOND", "STEP_FINISH", "content_digest"]

HANDSHAKE_RECORD = "auth"  # ConfigRecord of a handshake step (``step`` plus that step's bytes)
TAG_RECORD = "auth-tag"  # ConfigRecord ``{seq, tag}`` on every later message of the round
STEP_START, STEP_RESPOND, STEP_FINISH = "start", "respond", "finish"
_U64 = struct.Struct(">Q")


def _lp(data: bytes) -> bytes:
    return _U64.pack(len(data)) + data


def _encode_value(value: Any) -> bytes:
    """Typed, length-prefixed encoding of one ConfigRecord / MetricRecord value."""
    if isinstance(value, bool):
        return b"?" + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        return b"i" + _lp(str(value).encode())
    if isinstance(value, float):
        return b"f" + struct.pack(">d", value)
    if isinstance(value, str):
        return b"s" + _lp(value.encode("utf-8"))
    if isinstance(value, (bytes, bytearray)):
        return b"b" + _lp(bytes(value))
    if isinstance(value, list):
        return b"l" + _U64.pack(len(value)) + b"".join(_encode_value(v) for v in value)
    raise TypeError(f"cannot encode a {type(value).__name__} record value")


def _values_hash(record: Any) -> bytes:
    h = hashlib.sha256(b"values")
    for key in sorted(record.keys()):
        h.update(_lp(key.encode("utf-8")) + _encode_value(record[key]))
    return h.digest()


def _arrays_hash(record: ArrayRecord) -> bytes:
    h = hashlib.sha256(b"arrays")
    for key, arr in record.items():  # in order: an ArrayRecord is ordered
        h.update(_lp(key.encode("utf-8")) + _lp(arr.dtype.encode()) + _lp(arr.stype.encode()))
        h.update(_U64.pack(len(arr.shape)) + b"".join(_U64.pack(int(d)) for d in arr.shape))
        h.update(_U64.pack(len(arr.data)))
        h.update(arr.data)
    return h.digest()


def content_digest(content: RecordDict) -> bytes:
    """Canonical SHA-256 of a message's records (the ``auth-tag`` record excluded), via ``digest_records``."""
    items: dict[str, bytes] = {}
    for name, arrays in content.array_records.items():
        items[f"a:{name}"] = _arrays_hash(arrays)
    for name, config in content.config_records.items():
        if name != TAG_RECORD:
            items[f"c:{name}"] = _values_hash(config)
    for name, metrics in content.metric_records.items():
        items[f"m:{name}"] = _values_hash(metrics)
    return digest_records(items)
