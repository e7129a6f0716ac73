"""The vocabulary server and client share: message types, stage names, record names and keys, the blob codec,
the client's view of the configuration, and the admission records. No protocol logic lives here."""

from .codec import BLOB_STYPE, ProtocolError, array_blob, blob_array, config_from_record, config_record, round_of
from .constants import Action, Key, MessageType, NodeState, Record, Stage

__all__ = [
    "Action", "Key", "MessageType", "NodeState", "Record", "Stage",
    "BLOB_STYPE", "ProtocolError", "array_blob", "blob_array", "config_from_record", "config_record", "round_of",
]
