"""Variable k-pseudonym profile: KAT (design section 11.3), handshake, replay, clock window, and the mark attack."""

from __future__ import annotations

import math
import os

from auth_helpers import Clock

from bastionfl.auth import AuthServer, RoundContext
from bastionfl.research.kpseudonym import (
    BasicKPseudonymServer,
    VariableKPseudonymAuthority,
    VariableKPseudonymClient,
    VariableKRelay,
    group_pseudonym,
    kp_tag,
    mark_attack_success_rate,
)


def seq(start: int, n: int) -> bytes:
    return bytes(range(start, start + n))


def test_kat_group_pseudonym_tag_and_msg1():
    gk, k = seq(0xE0, 32), seq(0x00, 32)
    ctx = RoundContext(1, 3, 42, 1700000000)
    e = 1700000000 // 3600
    assert e == 472222
    gp = group_pseudonym(gk, e)
    assert gp.hex() == "94f2aa29656623eaf8ac8fb1515ea2c5"
    tag = kp_tag(k, gp, seq(0xA0, 16), b"fl-server-A", ctx.digest())
    assert tag.hex() == "44db8fcb1f9fc29ae287264c7e4de9ecfdb9d2c64557fbcf863713781d76cced"
    client = VariableKPseudonymClient(k, gk, ("fl-server-A",), clock=lambda: 1700000000.0)
    msg1 = client.start("fl-server-A", ctx, nc=seq(0xA0, 16))
    assert msg1.hex() == (
        "030094f2aa29656623eaf8ac8fb1515ea2c5a0a1a2a3a4a5a6a7a8a9aaabacadaeaf44db8fcb1f9fc29ae287264c7e4de9ecfdb9d2c6"
        "4557fbcf863713781d76cced"
    )


def _setup(k=4, n=8):
    clock = Clock()
    ha = VariableKPseudonymAuthority(k, clock=clock)
    clients = [ha.enroll(["S"]) for _ in range(n)]
    server = AuthServer("S", VariableKRelay(ha, "S"), clock=clock, msg1_len=66)
    return clock, ha, clients, server


def _run(client, server, ctx, tamper=lambda n, d: d):
    hs = server.begin(ctx)
    m1 = tamper("msg1", client.start("S", ctx))
    m3 = client.respond(tamper("msg2", hs.challenge(m1)))
    a, session = client.finish(hs.confirm(tamper("msg3", m3)))
    srv = hs.accept(a)
    return m1, session, srv


def test_variable_scheme_handshake_and_key_agreement():
    clock, ha, clients, server = _setup()
    for i, c in enumerate(clients):
        m1, cs, ss = _run(c, server, RoundContext(1, 1, i, int(clock()) + 60))
        assert len(m1) == 66 and cs is not None and ss is not None and cs.key == ss.key


def test_variable_scheme_rejects_replay_wrong_key_and_revoked():
    clock, ha, clients, server = _setup()
    ctx = RoundContext(1, 1, 0, int(clock()) + 60)
    m1, cs, _ = _run(clients[0], server, ctx)
    assert cs is not None
    hs = server.begin(ctx)
    hs.challenge(m1)  # replayed Nc -> decoy
    assert hs.accept(hs.confirm(os.urandom(32))) is None
    forger = VariableKPseudonymClient(os.urandom(32), clients[1].group_key, ("S",), clock=clock)
    assert _run(forger, server, ctx)[1] is None  # bucket insider without a member key
    ha.revoke(clients[2])
    assert _run(clients[2], server, RoundContext(1, 2, 2, int(clock()) + 60))[1] is None
    assert _run(clients[3], server, RoundContext(1, 2, 3, int(clock()) + 60))[1] is not None


def test_variable_pseudonym_changes_with_time_and_window():
    clock, ha, clients, server = _setup()
    c = clients[0]
    gp1 = c.start("S", RoundContext(1, 1, 0, int(clock()) + 60))[2:18]
    clock.t += 3600
    gp2 = c.start("S", RoundContext(1, 1, 0, int(clock()) + 60))[2:18]
    assert gp1 != gp2
    skewed = VariableKPseudonymClient(c.key, c.group_key, ("S",), clock=lambda: clock() + 3600)
    assert _run(skewed, server, RoundContext(1, 3, 0, int(clock()) + 60))[1] is not None  # e+1 accepted
    far = VariableKPseudonymClient(c.key, c.group_key, ("S",), clock=lambda: clock() + 2 * 3600)
    assert _run(far, server, RoundContext(1, 4, 0, int(clock()) + 60))[1] is None  # e+2 refused


def test_all_members_of_a_bucket_share_the_pseudonym():
    clock, ha, clients, server = _setup(k=4, n=8)
    gps = [c.start("S", RoundContext(1, 1, i, int(clock()) + 60))[2:18] for i, c in enumerate(clients)]
    assert len(set(gps[:4])) == 1 and len(set(gps[4:])) == 1 and gps[0] != gps[4]


def test_basic_scheme_authenticates_and_updates():
    srv = BasicKPseudonymServer(8, 4)
    for c in srv.clients:
        old = c.gp
        assert c.accept_update(srv.handle(c.request())) and c.gp != old
    assert not srv.clients[0].accept_update(os.urandom(32))


def test_mark_attack_breaks_basic_and_drops_to_chance_against_variable():
    k, trials = 8, 400
    assert mark_attack_success_rate("basic", k=k, trials=100, seed=1) == 1.0
    rate = mark_attack_success_rate("variable", k=k, trials=trials, seed=1)
    sigma = math.sqrt((1 / k) * (1 - 1 / k) / trials)
    assert abs(rate - 1 / k) <= 4 * sigma, rate  # chance level, well below the basic scheme's certainty
