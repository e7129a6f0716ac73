"""Review attack pass, wire side: every decoder refuses edge-case bodies behind a valid envelope with a typed error
(never a crash or a hang), every client step refuses odd but well-formed messages, and the Home Authority's signed
roster refuses another label, a small roster and malformed encodings."""

from __future__ import annotations

import struct
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastionfl.auth import AuthError, MalformedInput, SignedRoster
from bastionfl.crypto import (
    ClientEpoch,
    CommitmentList,
    CryptoError,
    CryptoFormatError,
    EpochConfirmation,
    EpochOpening,
    EpochProposal,
    KeyResponse,
    KeySetupReply,
    RoundConfirmation,
    RoundProposal,
    RoundShare,
    TranscriptSignature,
    Upload,
)
from bastionfl.crypto.keys import MAX_PARTICIPANTS
from bastionfl.crypto.round_messages import commitment_from_bytes
from bastionfl.crypto.wire import Kind, seal

from .attacks import collect, confirmation, proposal, sign_all
from .engine import key_epoch
from .review import SIGNED, c1_of, components, conf_kw, opened, updates


# ---- malformed and odd messages: a typed error, never a crash or a hang -----------------------------------------


def _sealed(kind, params, *parts):
    return seal(kind, params, b"".join(parts))


U32, U64, F64 = (lambda v: struct.pack("<I", v)), (lambda v: struct.pack("<Q", v)), (lambda v: struct.pack("<d", v))


def test_decoders_refuse_edge_case_bodies_quickly(tiny):
    """Behind a valid envelope: empty bodies, counts of 0, 2^32-1 and the maximum with nothing behind them,
    lengths of 0 and 2^40+1, rounds >= 2^63, presence flags of 2, NaN / negative / infinite bound and weight,
    unknown threat codes. Every decoder raises CryptoFormatError, each in well under a second."""
    commitment_head = bytes(32) + U64(1) + U32(0) + U64(300)
    bad_bodies = {
        Kind.EPOCH_OPENING: [b"", bytes([9]) + U64(0) + U64(0), bytes([2]) + U64(1 << 40)],
        Kind.KEY_SETUP_REPLY: [b"", bytes([2]) + bytes(128) + bytes([2]), bytes([7]) + bytes(129)],
        Kind.EPOCH_PROPOSAL: [bytes([2]) + U64(1) + b"r" + U64(0) + U32(c) for c in (0, 0xFFFFFFFF, MAX_PARTICIPANTS)],
        Kind.KEY_RESPONSE: [U32(0) + bytes([3]), U32(0) + bytes([1])],
        Kind.EPOCH_CONFIRMATION: [U32(c) for c in (0, 0xFFFFFFFF, MAX_PARTICIPANTS)],
        Kind.UPLOAD_COMMITMENT: [commitment_head + F64(v) + F64(1.0) + bytes(128) for v in
                                 (float("nan"), -1.0, float("inf"))]
        + [commitment_head + F64(1.0) + F64(v) + bytes(128) for v in (float("nan"), -0.5, float("-inf"))]
        + [bytes(32) + U64(1 << 63) + U32(0) + U64(300) + F64(1) + F64(1) + bytes(128),
           bytes(32) + U64(1) + U32(0) + U64(0) + F64(1) + F64(1) + bytes(128)],
        Kind.UPLOAD: [b"", commitment_head + F64(1.0) + F64(1.0) + bytes(128)],
        Kind.COMMITMENT_LIST: [U64(1) + U32(c) for c in (0, 0xFFFFFFFF, MAX_PARTICIPANTS)],
        Kind.ROUND_PROPOSAL: [U64(1) + U64(n) + U32(1) for n in (0, (1 << 40) + 1)]
        + [U64(1 << 63) + U64(300) + U32(1), U64(1) + U64(300) + U32(MAX_PARTICIPANTS),
           U64(1) + U64(1 << 40) + U32(1) + U32(0)],
        Kind.TRANSCRIPT_SIGNATURE: [U32(0) + bytes(32) + bytes([2]), U32(0) + bytes(32) + bytes([1]) + bytes(8)],
        Kind.ROUND_CONFIRMATION: [U64(1) + U64(300) + U32(c) for c in (0, 0xFFFFFFFF, MAX_PARTICIPANTS)],
        Kind.ROUND_SHARE: [U32(0) + U64(1) + bytes(32) + U64(c) for c in (0, 1 << 62, 2)],
    }
    decoders = {
        Kind.EPOCH_OPENING: EpochOpening.from_bytes, Kind.KEY_SETUP_REPLY: KeySetupReply.from_bytes,
        Kind.EPOCH_PROPOSAL: EpochProposal.from_bytes, Kind.KEY_RESPONSE: KeyResponse.from_bytes,
        Kind.EPOCH_CONFIRMATION: EpochConfirmation.from_bytes, Kind.UPLOAD_COMMITMENT: commitment_from_bytes,
        Kind.UPLOAD: Upload.from_bytes, Kind.COMMITMENT_LIST: CommitmentList.from_bytes,
        Kind.ROUND_PROPOSAL: RoundProposal.from_bytes, Kind.TRANSCRIPT_SIGNATURE: TranscriptSignature.from_bytes,
        Kind.ROUND_CONFIRMATION: RoundConfirmation.from_bytes, Kind.ROUND_SHARE: RoundShare.from_bytes,
    }
    for kind, bodies in bad_bodies.items():
        for body in bodies:
            start = time.perf_counter()
            with pytest.raises(CryptoFormatError):
                decoders[kind](tiny, _sealed(kind, tiny, body))
            assert time.perf_counter() - start < 1.0, (kind, body[:16])
        for junk in (b"", b"BFXM", None, "text", [1, 2]):
            with pytest.raises(CryptoFormatError):
                decoders[kind](tiny, junk)
    with pytest.raises(CryptoFormatError):  # a local state that claims 2^32-1 rounds
        ClientEpoch.import_local(tiny, seal(Kind.LOCAL_CLIENT_STATE, tiny, bytes([2]) + U32(3) * 3 + U32(0xFFFFFFFF)))


@pytest.mark.parametrize("threat", SIGNED)
def test_client_steps_refuse_odd_but_well_formed_messages(tiny, threat):
    """Well-formed messages with odd contents (duplicate or reordered members and upload indices, indices of 2^32-1,
    duplicate or missing signatures, a wrong number of components): every client step raises a CryptoError."""
    server, clients, replies = opened(tiny, threat, 3, f"odd-key-{threat}")
    for r in replies:
        server.add_key_reply(r)
    prop = EpochProposal.from_bytes(tiny, server.proposal())
    m = prop.members
    for members in ((m[0], m[0], m[1], m[2]), (m[2], m[1], m[0]), (m[0], m[1]), (m[0], m[1], m[2], m[2])):
        bad = EpochProposal(prop.threat_model, prop.crs, members, prop.b_tilde).to_bytes(tiny)
        with pytest.raises(CryptoError):
            clients[0].on_key_proposal(bad)
    fed = key_epoch(tiny, threat, 3, run_id=f"odd-{threat}")
    _, ups = collect(fed, 1, updates())
    honest = RoundProposal.from_bytes(tiny, proposal(fed, 1, ups, c1_of(ups, tiny)))
    cs = honest.commitments
    for uploads, commitments in (((0, 0, 1), (cs[0], cs[0], cs[1])), ((2, 1, 0), cs[::-1]),
                                 ((0, 1, 0xFFFFFFFF), cs), ((0, 1, 2), (cs[1], cs[0], cs[2]))):
        bad = RoundProposal(1, 300, uploads, commitments, honest.aggregate_digest).to_bytes(tiny)
        for c in fed.clients:
            with pytest.raises(CryptoError):
                c.on_round_proposal(bad)
    with pytest.raises(CryptoError):  # a length that is not the committed one
        fed.clients[0].on_round_proposal(RoundProposal(1, 299, honest.uploads, cs, honest.aggregate_digest)
                                         .to_bytes(tiny))
    sigs = sign_all(fed, honest.to_bytes(tiny))
    kw = conf_kw(threat, ups, tiny)
    s0, s1, s2 = sigs
    odd = [(s0, s1), (s0, s0, s1, s2), (s0, s1, s1),
           (s0, s1, TranscriptSignature(0xFFFFFFFF, s2.transcript, s2.sketch, s2.signature))]
    if threat == "malicious":  # a member of U without its sketch
        odd.append((s0, s1, TranscriptSignature(2, s2.transcript, None, s2.signature)))
    for bad_sigs in odd:
        for c in fed.clients:
            with pytest.raises(CryptoError):
                c.on_round_confirmation(confirmation(fed, 1, 300, bad_sigs, **kw))
    bad_kw = dict(c1=None) if threat == "malicious" else dict(components=components(ups)[:2])
    with pytest.raises(CryptoError):
        fed.clients[0].on_round_confirmation(confirmation(fed, 1, 300, sigs, **bad_kw))
    if threat == "malicious-colluding":
        reordered = dict(components=components(ups)[::-1])
        with pytest.raises(CryptoError):
            fed.clients[0].on_round_confirmation(confirmation(fed, 1, 300, sigs, **reordered))
    for c in fed.clients:  # none of the refusals spent anything: the honest confirmation still gets a share
        c.on_round_confirmation(confirmation(fed, 1, 300, sigs, **kw))



def test_home_authority_roster_checks(tiny):
    """The Home Authority's signed roster, as a client checks it: another key epoch, run or server, a roster below
    the client's minimum, one without the client, a signature by another key; and malformed encodings (no members,
    a count that does not match, unsorted or duplicate keys, non-canonical trailing bytes): each refused."""
    ha = Ed25519PrivateKey.generate()
    ha_pub = ha.public_key().public_bytes_raw()
    keys = sorted(bytes([i]) * 32 for i in range(1, 6))
    own = keys[2]
    roster = SignedRoster.sign(ha, "server-a", 7, 3, frozenset(keys))
    ok = dict(server_id="server-a", run_id=7, key_epoch=3, min_members=5, own_key=own)
    assert roster.verify(ha_pub, **ok) == frozenset(keys)
    for change in (dict(key_epoch=4), dict(run_id=8), dict(server_id="server-b"), dict(min_members=6),
                   dict(own_key=bytes(32))):
        with pytest.raises(AuthError):
            roster.verify(ha_pub, **{**ok, **change})
    with pytest.raises(AuthError):
        roster.verify(Ed25519PrivateKey.generate().public_key().public_bytes_raw(), **ok)
    split = SignedRoster.sign(ha, "server-a", 7, 3, frozenset(keys[:3]))  # one label, a smaller roster
    with pytest.raises(AuthError):
        split.verify(ha_pub, **ok)
    wire = roster.to_bytes()
    assert SignedRoster.from_bytes(wire) == roster
    head = len(wire) - 64 - 32 * 5 - 4
    count_at = head
    for bad in (wire[:count_at] + struct.pack(">I", 0) + wire[count_at + 4:],
                wire[:count_at] + struct.pack(">I", 0xFFFFFFFF) + wire[count_at + 4:],
                wire[:count_at + 4] + keys[1] + keys[0] + b"".join(keys[2:]) + wire[-64:],
                wire[:count_at + 4] + keys[0] + keys[0] + b"".join(keys[2:]) + wire[-64:],
                wire + b"\0", wire[:-1], b"", b"BFRS", None):
        with pytest.raises(MalformedInput):
            SignedRoster.from_bytes(bad)

