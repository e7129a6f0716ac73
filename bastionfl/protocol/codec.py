"""How protocol values travel inside Flower records: opaque byte blobs, and the run configuration clients see."""

from __future__ import annotations

from typing import Any

from flwr.app import Array, ConfigRecord

from bastionfl.config import RunConfig, client_values, from_client_values
from bastionfl.errors import BastionFLError

from .constants import Key

__all__ = ["BLOB_STYPE", "ProtocolError", "blob_array", "array_blob", "config_record", "config_from_record",
           "round_of"]

BLOB_STYPE = "bastionfl.xmk.v1"


class ProtocolError(BastionFLError, ValueError):
    """A record does not have the shape the protocol expects (wrong type, missing key)."""


def blob_array(data: bytes) -> Array:
    """Opaque protocol bytes as a Flower Array (chunked in transit; a custom stype so it never reads as weights)."""
    return Array(dtype="uint8", shape=(len(data),), stype=BLOB_STYPE, data=data)


def array_blob(array: Array) -> bytes:
    """The bytes inside an Array made by :func:`blob_array`."""
    if not isinstance(array, Array) or array.stype != BLOB_STYPE:
        raise ProtocolError(f"expected a {BLOB_STYPE} array, got {getattr(array, 'stype', type(array).__name__)!r}")
    return bytes(array.data)


def config_record(cfg: RunConfig, server_round: int) -> ConfigRecord:
    """What a client is told of the run: the settings it needs (``client_values``) and the round number."""
    return ConfigRecord({**client_values(cfg), Key.ROUND: server_round})


def config_from_record(record: ConfigRecord, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The client's RunConfig from a config record; ``overrides`` are the node's own settings (its data folder)."""
    values: dict[str, Any] = {k: v for k, v in record.items() if k != Key.ROUND}
    values.update(overrides or {})
    return from_client_values(values)


def round_of(record: ConfigRecord | None) -> int:
    """The round number a config record carries (0 if none)."""
    value = (record or ConfigRecord()).get(Key.ROUND, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"config record: round must be an integer, got {value!r}")
    return value
