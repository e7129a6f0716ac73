"""Unlinkability heuristics (design section 12.4): sizes, fresh values, uniform failures, decoy statistics and timing."""

from __future__ import annotations

import os
import statistics
import time
from collections import Counter

from auth_helpers import SERVER, ctx_for, handshake, make_client, make_server

# Stated tolerance for decoy timing: the median HA latency of each decoy class is within 35 % of the median of
# valid challenges (interleaved measurements, 300 each). A decoy that skipped the key schedule or the write
# transaction would be 2-10x faster and fail this test.
TIMING_TOLERANCE = 0.35


def _chi2_uniform(data: bytes) -> float:
    expected = len(data) / 256
    counts = Counter(data)
    return sum((counts.get(b, 0) - expected) ** 2 / expected for b in range(256))


def _cases(ha, clock):
    """msg1s of every class the network might see: fast, recovery, unknown pid, replayed, revoked, garbage."""
    server = make_server(ha, clock)
    fast = make_client(ha, clock, "fast")
    rec = make_client(ha, clock, "rec")
    rec_cred = rec._store.load()
    rec_cred.pid_burned = True
    rec._store.save(rec_cred)
    gone = make_client(ha, clock, "gone")
    ha.revoke("gone")
    return server, fast, rec, gone


def test_every_request_class_has_identical_sizes_and_header(ha, clock):
    server, fast, rec, gone = _cases(ha, clock)
    ctx = ctx_for(clock, 1)
    done = handshake(make_client(ha, clock, "old"), server, ctx)
    msgs = {
        "fast": fast.start(SERVER, ctx),
        "recovery": rec.start(SERVER, ctx),
        "revoked": gone.start(SERVER, ctx),
        "replayed": done.msg1,
        "unknown": done.msg1[:2] + os.urandom(112),
    }
    headers = {m[:2] for m in msgs.values()}
    assert len(headers) == 1 and {len(m) for m in msgs.values()} == {114}
    shapes = set()
    for m in msgs.values():
        reply = server.relay.challenge(ctx, m)
        shapes.add((len(reply.sid), len(reply.msg2), len(reply.hxres)))
    assert shapes == {(16, 80, 16)}


def test_no_value_repeats_across_sessions(ha, clock):
    client, server = make_client(ha, clock), make_server(ha, clock)
    fields = []
    for epoch in range(40):
        t = handshake(client, server, ctx_for(clock, epoch, node_id=1))  # same node, same run: worst case
        m = t.msg1 + t.msg2 + t.msg3 + t.msg4 + t.ack
        fields += [m[i:i + 16] for i in range(2, len(m) - 15, 16)]
        assert t.client_session is not None
    assert len(fields) == len(set(fields))


def test_failures_look_like_successes_to_the_server(ha, clock):
    """A client's failure replies are random bytes of the right size, as uniform as real RES/ACK values."""
    client, server = make_client(ha, clock), make_server(ha, clock)
    good, bad = b"", b""
    for epoch in range(150):
        t = handshake(client, server, ctx_for(clock, 2 * epoch))
        good += t.msg3 + t.ack
        # a tampered msg2 makes the client fail; its msg3 and ack must look the same
        f = handshake(client, server, ctx_for(clock, 2 * epoch + 1),
                      lambda n, d: d[:5] + bytes((d[5] ^ 1,)) + d[6:] if n == "msg2" else d)
        bad += f.msg3 + f.ack
        assert len(f.msg3) == len(t.msg3) and len(f.ack) == len(t.ack)
    bound = 255 + 6 * (2 * 255) ** 0.5  # about p < 1e-6 for a uniform source
    assert _chi2_uniform(good) < bound and _chi2_uniform(bad) < bound


def test_decoy_msg2_and_hxres_are_statistically_uniform(ha, clock):
    server, fast, rec, gone = _cases(ha, clock)
    real, decoy = b"", b""
    for epoch in range(300):
        ctx = ctx_for(clock, epoch)
        r = server.relay.challenge(ctx, fast.start(SERVER, ctx))
        fast._store.save(_unburn(fast._store.load()))
        real += r.msg2 + r.hxres
        d = server.relay.challenge(ctx, gone.start(SERVER, ctx))
        decoy += d.msg2 + d.hxres
    bound = 255 + 6 * (2 * 255) ** 0.5
    assert _chi2_uniform(real) < bound and _chi2_uniform(decoy) < bound
    # and the Nh position carries nothing special either (first 16 bytes of msg2)
    assert _chi2_uniform(decoy[:: 96][:300]) < 3 * bound


def _unburn(cred):
    cred.pid_burned = False
    return cred


def test_decoy_timing_within_tolerance(ha, clock):
    server, fast, rec, gone = _cases(ha, clock)
    relay = server.relay
    samples: dict[str, list[float]] = {"valid": [], "revoked": [], "unknown": [], "garbage": []}
    for epoch in range(300):
        ctx = ctx_for(clock, epoch)
        inputs = {
            "valid": fast.start(SERVER, ctx),
            "revoked": gone.start(SERVER, ctx),
            "unknown": bytes((1, 1)) + os.urandom(16) + fast.start(SERVER, ctx)[18:],
            "garbage": bytes((1, 1)) + os.urandom(112),
        }
        fast._store.save(_unburn(fast._store.load()))
        for name, msg in inputs.items():
            t0 = time.perf_counter()
            relay.challenge(ctx, msg)
            samples[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in samples.items()}
    for name in ("revoked", "unknown", "garbage"):
        assert abs(med[name] - med["valid"]) <= TIMING_TOLERANCE * med["valid"], med


def test_tampered_session_leaves_no_mark_on_the_next_one(ha, clock):
    """Mark attack on the base protocol: after tampering, the next msg1 has the same shape as everyone else's."""
    victim, peer, server = make_client(ha, clock, "victim"), make_client(ha, clock, "peer"), make_server(ha, clock)
    handshake(victim, server, ctx_for(clock, 1), lambda n, d: os.urandom(80) if n == "msg2" else d)
    handshake(peer, server, ctx_for(clock, 1))
    ctx = ctx_for(clock, 2)
    mv, mp = victim.start(SERVER, ctx), peer.start(SERVER, ctx)
    assert len(mv) == len(mp) and mv[:2] == mp[:2]  # recovery vs fast: same header, same size
