"""Domain-separated digests that bind each protocol step: the epoch opening, the roster, the epoch and the round.

Every digest is SHA-256 over a label and length-prefixed parts, so no two different inputs (of any step) can
collide by re-splitting bytes. Members sign these digests; a client releases a share only when every member of the
decrypting set signed the same round transcript.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence

from .crs import CrsSeed
from .params import Params
from .threat import ThreatModel


def hash_parts(label: bytes, *parts: bytes) -> bytes:
    """SHA-256 of ``label`` and each part, every one length-prefixed."""
    h = hashlib.sha256(b"bastionfl/xmkckks/" + label + b"\x00")
    for part in parts:
        h.update(struct.pack("<Q", len(part)))
        h.update(part)
    return h.digest()


def opening_digest(params: Params, threat: ThreatModel, crs: CrsSeed, threshold: bytes = b"") -> bytes:
    """The key epoch being opened: parameter fingerprint, threat model, CRS seed (run id, epoch) and, for t-of-n
    decryption, the threshold rule."""
    extra = (threshold,) if threshold else ()
    return hash_parts(b"opening", params.fingerprint, bytes([threat.code]), crs.digest, *extra)


def member_message(opening: bytes, share_digest: bytes, verification_key: bytes) -> bytes:
    """What a member signs at key setup: this epoch, its public share's digest (or commitment), its key."""
    return hash_parts(b"member", opening, share_digest, verification_key)


def epoch_transcript(opening: bytes, members: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The roster of the epoch, sorted by verification key: every (verification key, share digest)."""
    ordered = sorted(members)
    return hash_parts(b"epoch-transcript", opening, struct.pack("<I", len(ordered)), *(vk + d for vk, d in ordered))


def epoch_digest(transcript: bytes, key_digest: bytes) -> bytes:
    """The epoch's identity: roster transcript and the aggregated key it produced."""
    return hash_parts(b"epoch", transcript, key_digest)


def key_sketch_message(transcript: bytes, key_digest: bytes, sketch: bytes) -> bytes:
    """What a member signs at the key check (malicious): roster, aggregated key digest, its own sketch."""
    return hash_parts(b"key-sketch", transcript, key_digest, sketch)


def round_transcript(
    epoch: bytes,
    round_number: int,
    length: int,
    ciphertexts: int,
    uploads: Sequence[int],
    commitment_digests: Sequence[bytes],
    aggregate_digest: bytes,
) -> bytes:
    """The round every member signs before any share: epoch, round, shape, upload set U (member indices, sorted),
    the commitment of each upload in U (same order), and the digest of the aggregate C1."""
    body = struct.pack("<QQQI", round_number, length, ciphertexts, len(uploads))
    body += b"".join(struct.pack("<I", i) for i in uploads)
    return hash_parts(b"round", epoch, body, b"".join(commitment_digests), aggregate_digest)


def transcript_signature_message(transcript: bytes, sketch: bytes) -> bytes:
    """What a member signs at D1: the round transcript and its own sketch (empty where there is none)."""
    return hash_parts(b"transcript-signature", transcript, sketch)
