"""Per-message tags under the session key: round trip, replay, direction, round binding, canonical digests."""

from __future__ import annotations

import os

from auth_helpers import ctx_for, handshake, make_client, make_server

from bastionfl.auth import CLIENT_TO_SERVER, SERVER_TO_CLIENT, digest_records, mac_message, verify_message


def _sessions(ha, clock, epoch=1):
    t = handshake(make_client(ha, clock, f"c{epoch}"), make_server(ha, clock), ctx_for(clock, epoch))
    return t.client_session, t.server_session


def test_seal_and_check_both_directions(ha, clock):
    cs, ss = _sessions(ha, clock)
    d = digest_records({"arrays": b"weights", "config": b"cfg"})
    seq, tag = ss.seal("train", d)
    assert cs.check("train", seq, d, tag)
    seq2, tag2 = cs.seal("train", d)
    assert ss.check("train", seq2, d, tag2)


def test_replay_wrong_type_tampered_digest_and_reflection_fail(ha, clock):
    cs, ss = _sessions(ha, clock)
    d = digest_records({"arrays": b"weights"})
    seq, tag = ss.seal("train", d)
    assert not cs.check("evaluate", seq, d, tag)  # wrong message type
    assert not cs.check("train", seq, digest_records({"arrays": b"weightz"}), tag)
    assert not ss.check("train", seq, d, tag)  # reflected back to its sender: wrong direction
    assert cs.check("train", seq, d, tag)
    assert not cs.check("train", seq, d, tag)  # replay
    assert not cs.check("train", seq, d, os.urandom(32)) and not cs.check("train", 7, d, b"short")


def test_tag_of_one_round_fails_in_the_next(ha, clock):
    cs1, ss1 = _sessions(ha, clock, 1)
    d = digest_records({"x": b"1"})
    seq, tag = ss1.seal("train", d)
    assert not verify_message(cs1.key, tag, direction=SERVER_TO_CLIENT, run_id=cs1.ctx.run_id, round=2,
                              message_type="train", seq=seq, digest=d)
    assert verify_message(cs1.key, tag, direction=SERVER_TO_CLIENT, run_id=cs1.ctx.run_id, round=1,
                          message_type="train", seq=seq, digest=d)
    assert not verify_message(cs1.key, tag, direction=CLIENT_TO_SERVER, run_id=cs1.ctx.run_id, round=1,
                              message_type="train", seq=seq, digest=d)


def test_free_functions_and_digest_canonical():
    key = os.urandom(32)
    assert digest_records({"a": b"1", "b": b"2"}) == digest_records({"b": b"2", "a": b"1"})
    assert digest_records({"a": b"12"}) != digest_records({"a1": b"2"})
    d = digest_records({})
    tag = mac_message(key, direction=CLIENT_TO_SERVER, run_id=1, round=1, message_type="t", seq=0, digest=d)
    assert verify_message(key, tag, direction=CLIENT_TO_SERVER, run_id=1, round=1, message_type="t", seq=0, digest=d)
    assert not verify_message(key, tag, direction=CLIENT_TO_SERVER, run_id=1, round=1, message_type="t", seq=1,
                              digest=d)
    assert not verify_message(key, tag, direction=9, run_id=1, round=1, message_type="t", seq=0, digest=d)


def test_session_repr_hides_key(ha, clock):
    cs, ss = _sessions(ha, clock)
    for s in (cs, ss):
        assert s.key.hex() not in repr(s) and "secret" in repr(s)
