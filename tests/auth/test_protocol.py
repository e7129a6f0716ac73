"""Correctness, replay, tampering, wrong keys, relays, desync, restart, revocation and key rotation."""

from __future__ import annotations

import os

import pytest

from bastionfl.auth import (
    AuthClient,
    HomeAuthority,
    LocalRelay,
    MemoryCredentialStore,
    RateLimited,
    RateLimits,
    RoundContext,
)
from bastionfl.auth.messages import MODE_RECOVERY, build_msg1
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from auth_helpers import GENEROUS, OTHER, SERVER, ctx_for, handshake, make_client, make_server


def ok(t) -> bool:
    return (
        t.client_session is not None
        and t.server_session is not None
        and t.client_session.key == t.server_session.key
    )


def test_happy_path_rotates_pseudonym_and_keys(ha, clock):
    client, server = make_client(ha, clock), make_server(ha, clock)
    seen_pids, keys = set(), set()
    for epoch in range(1, 6):
        t = handshake(client, server, ctx_for(clock, epoch))
        assert ok(t)
        assert [len(x) for x in (t.msg1, t.msg2, t.msg3, t.msg4, t.ack)] == [114, 80, 32, 32, 32]
        seen_pids.add(t.msg1[2:18])
        keys.add(t.client_session.key)
        assert t.server_session.handle is not None and len(t.server_session.handle) == 16
    assert len(seen_pids) == 5 and len(keys) == 5
    assert ha.store.counter("decoys") == 0


def test_many_epochs_all_pseudonyms_distinct_and_secrets_never_on_the_wire(ha, clock):
    client, server = make_client(ha, clock), make_server(ha, clock)
    cred = client._store.load()
    pids, wire = set(), []
    for epoch in range(150):
        t = handshake(client, server, ctx_for(clock, epoch))
        assert ok(t)
        pids.add(t.msg1[2:18])
        wire.append(t.msg1 + t.msg2 + t.msg3 + t.msg4 + t.ack)
    assert len(pids) == 150
    blob = b"".join(wire)
    assert cred.cid not in blob and cred.key not in blob


def test_session_key_bound_to_server_and_round(ha, clock):
    client, server = make_client(ha, clock), make_server(ha, clock)
    t = handshake(client, server, ctx_for(clock, 1))
    s = t.client_session
    assert s.server_id == SERVER and s.ctx.epoch == 1 and s.ctx.node_id == 42


# -- replay --------------------------------------------------------------------------------------------------------


def test_msg1_replay_before_and_after_commit(ha, clock):
    client, server = make_client(ha, clock), make_server(ha, clock)
    captured = {}
    ctx = ctx_for(clock, 1)

    def grab(name, data):
        captured[name] = data
        return data

    assert ok(handshake(client, server, ctx, grab))
    # after commit: the replayed msg1 yields a decoy (a random-looking msg2 whose HXRES cannot match anything)
    before = ha.store.counter("decoys")
    msg2 = server.begin(ctx).challenge(captured["msg1"])
    assert len(msg2) == 80 and ha.store.counter("decoys") == before + 1


def test_msg1_replay_before_commit_gives_attacker_nothing(ha, clock):
    client, server = make_client(ha, clock), make_server(ha, clock)
    ctx = ctx_for(clock, 1)
    msg1 = client.start(SERVER, ctx)
    hs = server.begin(ctx)
    msg2 = hs.challenge(msg1)
    # an attacker replays msg1 and answers with guessed RES: no session, no state change
    ahs = server.begin(ctx)
    ahs.challenge(msg1)
    assert len(ahs.confirm(os.urandom(32))) == 32
    assert ahs.accept(os.urandom(32)) is None
    # the victim still completes its own handshake
    out = client.finish(hs.confirm(client.respond(msg2)))
    assert out.session is not None and hs.accept(out.ack) is not None


def test_msg2_replayed_to_same_and_other_client_fails_identically(ha, clock):
    alice, bob = make_client(ha, clock, "alice"), make_client(ha, clock, "bob")
    server = make_server(ha, clock)
    captured = {}

    def grab(name, data):
        captured.setdefault(name, data)
        return data

    assert ok(handshake(alice, server, ctx_for(clock, 1), grab))
    outcomes = []
    for victim in (alice, bob):
        ctx = ctx_for(clock, 2)
        hs = server.begin(ctx)
        hs.challenge(victim.start(SERVER, ctx))
        msg3 = victim.respond(captured["msg2"])  # stale challenge instead of the fresh one
        msg4 = hs.confirm(msg3)
        out = victim.finish(msg4)
        outcomes.append((len(msg3), len(msg4), len(out.ack), out.session is None, hs.accept(out.ack) is None))
    assert outcomes[0] == outcomes[1] == (32, 32, 32, True, True)
    # both heal on the next round
    assert ok(handshake(alice, server, ctx_for(clock, 3))) and ok(handshake(bob, server, ctx_for(clock, 3)))


def test_msg3_msg4_ack_and_confirm_replays(ha, clock):
    client, server = make_client(ha, clock), make_server(ha, clock)
    cap = {}

    def grab(name, data):
        cap[name] = data
        return data

    t1 = handshake(client, server, ctx_for(clock, 1), grab)
    assert ok(t1)
    # msg3 / msg4 / ack of session 1 injected into session 2
    for name in ("msg3", "msg4", "ack"):
        t = handshake(client, server, ctx_for(clock, 2), lambda n, d, name=name: cap[name] if n == name else d)
        assert t.client_session is None or t.server_session is None
        assert t.server_session is None
    # confirm at the HA is single use
    ctx = ctx_for(clock, 3)
    hs = server.begin(ctx)
    m2 = hs.challenge(client.start(SERVER, ctx))
    m3 = client.respond(m2)
    relay = server.relay
    assert relay.confirm(hs._sid, m3).ok
    assert not relay.confirm(hs._sid, m3).ok


def test_expired_session_and_expired_round(ha, clock):
    client, server = make_client(ha, clock), make_server(ha, clock)
    ctx = ctx_for(clock, 1)
    hs = server.begin(ctx)
    m2 = hs.challenge(client.start(SERVER, ctx))
    m3 = client.respond(m2)
    clock.t += HomeAuthority.SESSION_TTL_S + 1
    assert client.finish(hs.confirm(m3)).session is None
    stale = RoundContext(7, 2, 42, int(clock()) - 1)
    assert not ok(handshake(client, server, stale))
    assert ok(handshake(client, server, ctx_for(clock, 3)))


# -- tampering -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["msg1", "msg2", "msg3", "msg4", "ack"])
def test_bit_flip_at_every_byte_fails_then_heals(ha, clock, target):
    client, server = make_client(ha, clock), make_server(ha, clock)
    size = {"msg1": 114, "msg2": 80, "msg3": 32, "msg4": 32, "ack": 32}[target]
    pids = set()
    for i in range(size):
        bit = 1 << (i % 8)

        def flip(name, data, i=i, bit=bit):
            if name == "msg1":
                pids.add(data[2:18])
            return data[:i] + bytes((data[i] ^ bit,)) + data[i + 1:] if name == target else data

        t = handshake(client, server, ctx_for(clock, i), flip)
        assert t.server_session is None, f"flip at byte {i} of {target} was accepted"
        if target != "ack":
            assert t.client_session is None
        assert [len(x) for x in (t.msg2, t.msg3, t.msg4, t.ack)] == [80, 32, 32, 32]
    assert len(pids) == size  # no pseudonym is ever sent twice, whatever the desync
    assert ok(handshake(client, server, ctx_for(clock, 999)))


def test_hxres_mismatch_rejected_without_ha_call(ha, clock):
    client = make_client(ha, clock)
    calls = []

    class Spy(LocalRelay):
        def confirm(self, sid, res):
            calls.append(1)
            return super().confirm(sid, res)

    from bastionfl.auth import AuthServer

    server = AuthServer(SERVER, Spy(ha, SERVER), clock=clock)
    t = handshake(client, server, ctx_for(clock, 1), lambda n, d: os.urandom(32) if n == "msg3" else d)
    assert t.server_session is None and calls == []


def test_wrong_key_and_wrong_ha_public_key(ha, clock):
    server = make_server(ha, clock)
    for field in ("key", "ha_public_key"):
        cred = ha.enroll(f"mallory-{field}", [SERVER])
        setattr(cred, field, os.urandom(32) if field == "key" else
                X25519PrivateKey.generate().public_key().public_bytes_raw())
        client = AuthClient(MemoryCredentialStore(cred), clock=clock)
        for epoch in range(3):
            assert not ok(handshake(client, server, ctx_for(clock, epoch)))


def test_relay_to_another_server_fails(ha, clock):
    client = make_client(ha, clock)
    server_a, server_b = make_server(ha, clock, SERVER), make_server(ha, clock, OTHER)
    ctx = ctx_for(clock, 1)
    msg1 = client.start(SERVER, ctx)
    hs_b = server_b.begin(ctx)  # malicious S_B relays the client's msg1 under its own identity
    msg3 = client.respond(hs_b.challenge(msg1))
    assert client.finish(hs_b.confirm(msg3)).session is None
    assert ok(handshake(client, server_a, ctx_for(clock, 2)))
    assert ok(handshake(client, server_b, ctx_for(clock, 3)))  # allowed server, its own handshake


def test_wrong_context_fails(ha, clock):
    client, server = make_client(ha, clock), make_server(ha, clock)
    ctx = ctx_for(clock, 1, node_id=42)
    other = ctx_for(clock, 1, node_id=43)
    hs = server.begin(other)  # S binds the request to a different node than the client did
    msg3 = client.respond(hs.challenge(client.start(SERVER, ctx)))
    assert client.finish(hs.confirm(msg3)).session is None


def test_forged_recovery_requests_do_not_desync_victim(ha, clock):
    victim, server = make_client(ha, clock), make_server(ha, clock)
    cred = victim._store.load()
    kid, pk = ha.current_key()
    for ctr in (2**60, cred.ctr + 1, 2**64 - 1):
        ctx = ctx_for(clock, 1)
        forged = build_msg1(
            kid=kid, pk_ha=pk, pid=os.urandom(16), nc=os.urandom(16), esk=X25519PrivateKey.generate(),
            mode=MODE_RECOVERY, cid_field=cred.cid, ctr=ctr, server_id=SERVER.encode(), ctx=ctx.digest(),
        )
        hs = server.begin(ctx)
        hs.challenge(forged)
        hs.confirm(os.urandom(32))  # the forger cannot compute RES
        assert hs.accept(os.urandom(32)) is None
    for epoch in range(2, 5):
        assert ok(handshake(victim, server, ctx_for(clock, epoch)))


# -- desync and crashes --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("drop", ["msg2", "msg3", "msg4", "ack"])
def test_dropped_message_heals_in_one_attempt(ha, clock, drop):
    client, server = make_client(ha, clock), make_server(ha, clock)
    for epoch in range(3):
        t = handshake(client, server, ctx_for(clock, 2 * epoch), lambda n, d: os.urandom(len(d)) if n == drop else d)
        assert t.server_session is None
        assert ok(handshake(client, server, ctx_for(clock, 2 * epoch + 1)))


def test_pid_index_wiped_recovers(ha, clock):
    client, server = make_client(ha, clock), make_server(ha, clock)
    assert ok(handshake(client, server, ctx_for(clock, 1)))
    ha.store.wipe_pid_index()
    assert not ok(handshake(client, server, ctx_for(clock, 2)))  # unknown pid -> decoy, pid now burned
    assert ok(handshake(client, server, ctx_for(clock, 3)))  # recovery path


def test_ha_restart_in_the_middle_of_a_handshake(db_path, kek, clock):
    ha = HomeAuthority.open(db_path, kek, limits=GENEROUS, clock=clock)
    client = make_client(ha, clock)
    server = make_server(ha, clock)
    ctx = ctx_for(clock, 1)
    hs = server.begin(ctx)
    msg3 = client.respond(hs.challenge(client.start(SERVER, ctx)))
    ha.store.close()  # crash after msg2 left; the pending P_next was written ahead
    ha2 = HomeAuthority.open(db_path, kek, limits=GENEROUS, clock=clock)
    server2 = make_server(ha2, clock)
    hs._server = server2
    assert client.finish(hs.confirm(msg3)).session is None  # the in-flight session died with the process
    t = handshake(client, server2, ctx_for(clock, 2))
    assert ok(t)
    assert ha2.store.counter("decoys") == 0  # healed on the fast path via the persisted pending pseudonym
    ha2.store.close()


def test_client_crash_after_ctr_persisted_never_reuses_pid(ha, clock):
    cred = ha.enroll("crashy", [SERVER])
    store = MemoryCredentialStore(cred)
    server = make_server(ha, clock)
    first = AuthClient(store, clock=clock).start(SERVER, ctx_for(clock, 1))  # process dies here
    t = handshake(AuthClient(store, clock=clock), server, ctx_for(clock, 2))
    assert ok(t) and t.msg1[2:18] != first[2:18]


def test_concurrent_handshakes_from_one_credential_use_distinct_pids(ha, clock):
    store = MemoryCredentialStore(ha.enroll("twin", [SERVER]))
    server = make_server(ha, clock)
    a, b = AuthClient(store, clock=clock), AuthClient(store, clock=clock)
    m_a, m_b = a.start(SERVER, ctx_for(clock, 1)), b.start(SERVER, ctx_for(clock, 1, node_id=9))
    assert m_a[2:18] != m_b[2:18]


# -- revocation, key rotation, rate limits -------------------------------------------------------------------------


def test_revocation_effective_next_round_on_both_paths(ha, clock):
    client, server = make_client(ha, clock), make_server(ha, clock)
    assert ok(handshake(client, server, ctx_for(clock, 1)))
    assert ha.revoke("alice")
    for epoch in range(2, 6):  # fast path first, then recovery attempts
        t = handshake(client, server, ctx_for(clock, epoch))
        assert not ok(t) and [len(x) for x in (t.msg1, t.msg2, t.msg3, t.msg4)] == [114, 80, 32, 32]
    assert not ha.revoke("nobody")
    fresh = make_client(ha, clock, "alice-2")
    assert ok(handshake(fresh, server, ctx_for(clock, 9)))


def test_revocation_between_challenge_and_confirm(ha, clock):
    client, server = make_client(ha, clock), make_server(ha, clock)
    ctx = ctx_for(clock, 1)
    hs = server.begin(ctx)
    msg3 = client.respond(hs.challenge(client.start(SERVER, ctx)))
    ha.revoke("alice")
    assert client.finish(hs.confirm(msg3)).session is None


def test_ha_key_rotation_grace_then_refusal(ha, clock):
    client, server = make_client(ha, clock), make_server(ha, clock)
    new_kid = ha.rotate_key(grace_s=100)
    assert ha.current_key()[0] == new_kid
    assert ok(handshake(client, server, ctx_for(clock, 1)))  # old kid in grace
    clock.t += 101
    assert ha.purge_retired_keys() == 1
    assert not ok(handshake(client, server, ctx_for(clock, 2)))
    newcomer = make_client(ha, clock, "bob")
    assert ok(handshake(newcomer, server, ctx_for(clock, 3)))


def test_server_quota_raises_and_refills(db_path, kek, clock):
    limits = RateLimits(server_rate=1.0, server_burst=2.0, fast_rate=1e6, fast_burst=1e6)
    ha = HomeAuthority.open(db_path, kek, limits=limits, clock=clock)
    client, server = make_client(ha, clock), make_server(ha, clock)
    ctx = ctx_for(clock, 1)
    server.relay.challenge(ctx, os.urandom(114))
    server.relay.challenge(ctx, os.urandom(114))
    with pytest.raises(RateLimited):
        server.relay.challenge(ctx, os.urandom(114))
    clock.t += 5
    assert ok(handshake(client, server, ctx_for(clock, 2)))


def test_recovery_budget_is_soft_not_a_lockout(db_path, kek, clock):
    limits = RateLimits(recovery_rate=1 / 60, recovery_burst=2)
    ha = HomeAuthority.open(db_path, kek, limits=limits, clock=clock)
    client, server = make_client(ha, clock), make_server(ha, clock)
    ha.store.wipe_pid_index()
    results = [ok(handshake(client, server, ctx_for(clock, e))) for e in range(1, 5)]
    assert results[0] is False and True in results  # unknown pid, then a recovery succeeds
    cred = client._store.load()
    kid, pk = ha.current_key()
    for _ in range(5):  # an attacker who knows cid burns the recovery budget
        ctx = ctx_for(clock, 7)
        forged = build_msg1(kid=kid, pk_ha=pk, pid=os.urandom(16), nc=os.urandom(16),
                            esk=X25519PrivateKey.generate(), mode=MODE_RECOVERY, cid_field=cred.cid,
                            ctr=2**40, server_id=SERVER.encode(), ctx=ctx.digest())
        server.relay.challenge(ctx, forged)
    assert ok(handshake(client, server, ctx_for(clock, 8)))  # the victim's fast path is untouched
    clock.t += 3600
    ha.store.wipe_pid_index()
    handshake(client, server, ctx_for(clock, 9))
    assert ok(handshake(client, server, ctx_for(clock, 10)))  # budget refilled: no permanent lockout


def test_client_refuses_unconfigured_server(ha, clock):
    from bastionfl.auth import MalformedInput

    client = make_client(ha, clock, servers=(SERVER,))
    with pytest.raises(MalformedInput):
        client.start("evil-server", ctx_for(clock, 1))


def test_out_of_order_calls_fail_uniformly(ha, clock):
    client, server = make_client(ha, clock), make_server(ha, clock)
    assert len(client.respond(os.urandom(80))) == 32
    out = client.finish(os.urandom(32))
    assert out.session is None and len(out.ack) == 32
    hs = server.begin(ctx_for(clock, 1))
    assert len(hs.confirm(os.urandom(32))) == 32 and hs.accept(os.urandom(32)) is None
