"""A deviating server (and colluding clients) at key setup: fake keys, sybils, split rosters, rogue keys,
replays and downgrades are refused in every setting that claims to stop them."""

from __future__ import annotations

import numpy as np
import pytest

from bastionfl.crypto import (
    ClientEpoch,
    ClientPolicy,
    EpochConfirmation,
    EpochProposal,
    KeyResponse,
    KeyShare,
    MemberEntry,
    RosterError,
    ServerEpoch,
    VerificationError,
)
from bastionfl.crypto.polyarith import add_mod, digest

SIGNED = ["malicious", "malicious-colluding"]


def _setup(params, threat, n, run_id, policy=None):
    policy = policy or ClientPolicy(threat)
    server, opening = ServerEpoch.open(params, threat, run_id, 0)
    clients, replies = [], []
    for _ in range(n):
        c, r = ClientEpoch.open(params, opening, policy)
        clients.append(c)
        replies.append(r)
        server.add_key_reply(r)
    return server, opening, clients, replies


def test_fake_aggregated_key_refused_malicious(tiny):
    """Sybil key: the roster is honest but b~ is a key the server holds, or b~ plus the server's own share."""
    for variant in ("server-key", "plus-server-share"):
        server, opening, clients, _ = _setup(tiny, "malicious", 3, f"fake-{variant}")
        prop = EpochProposal.from_bytes(tiny, server.proposal())
        own = KeyShare.generate(tiny, prop.crs).public_share().b
        fake = own if variant == "server-key" else add_mod(prop.b_tilde, own, tiny.key_primes)
        forged = EpochProposal(prop.threat_model, prop.crs, prop.members, fake).to_bytes(tiny)
        responses = [KeyResponse.from_bytes(tiny, c.on_key_proposal(forged)) for c in clients]
        conf = EpochConfirmation(tuple(sorted(responses, key=lambda r: r.member))).to_bytes(tiny)
        for c in clients:
            with pytest.raises(VerificationError, match="not the sum"):
                c.on_key_confirmation(conf)
            assert c.stage != "ready"


def test_altered_revealed_share_refused_colluding(tiny):
    """malicious-colluding: the clients sum the revealed shares themselves; one swapped share does not match."""
    server, opening, clients, _ = _setup(tiny, "malicious-colluding", 3, "swap")
    prop = server.proposal()
    responses = [KeyResponse.from_bytes(tiny, c.on_key_proposal(prop)) for c in clients]
    responses.sort(key=lambda r: r.member)
    fake = KeyShare.generate(tiny, server.crs).public_share().b
    responses[1] = KeyResponse(responses[1].member, b=fake)
    conf = EpochConfirmation(tuple(responses)).to_bytes(tiny)
    for c in clients:
        with pytest.raises(VerificationError, match="commitment"):
            c.on_key_confirmation(conf)
    with pytest.raises(VerificationError):
        server.add_key_response(responses[1].to_bytes(tiny))


@pytest.mark.parametrize("threat", SIGNED)
def test_sybil_members_refused_with_a_certified_roster(tiny, threat):
    """The server adds members of its own: the authority-certified roster does not list them."""
    server, opening, clients, _ = _setup(tiny, threat, 3, f"sybil-{threat}")
    sybil, reply = ClientEpoch.open(tiny, opening, ClientPolicy(threat))
    server.add_key_reply(reply)
    prop = server.proposal()  # 4 members: 3 certified + the server's sybil
    certified = [c.verification_key for c in clients]
    for c in clients:
        with pytest.raises(RosterError, match="certified"):
            c.on_key_proposal(prop, certified)
    strict = ClientPolicy(threat, require_certified_roster=True)
    c2, _ = ClientEpoch.open(tiny, opening, strict)
    with pytest.raises(RosterError, match="requires an authority-certified roster"):
        c2.on_key_proposal(prop)


@pytest.mark.parametrize("threat", SIGNED)
def test_epoch_split_into_small_rosters_refused(tiny, threat):
    """The server splits the fleet: a roster that is a subset of the certified one, or below the minimum."""
    server, opening, clients, _ = _setup(tiny, threat, 4, f"split-{threat}", ClientPolicy(threat, min_members=3))
    certified = [c.verification_key for c in clients]
    sub = server.proposal(members=certified[:3])
    with pytest.raises(RosterError, match="certified"):
        clients[0].on_key_proposal(sub, certified)
    server2, opening2, clients2, _ = _setup(tiny, threat, 4, f"split2-{threat}", ClientPolicy(threat, min_members=4))
    small = server2.proposal(members=[c.verification_key for c in clients2[:3]])
    with pytest.raises(RosterError, match="below the minimum"):
        clients2[0].on_key_proposal(small)


@pytest.mark.parametrize("threat", SIGNED)
def test_roster_entries_must_be_signed_and_own_entry_intact(tiny, threat):
    server, opening, clients, replies = _setup(tiny, threat, 3, f"entries-{threat}")
    prop = EpochProposal.from_bytes(tiny, server.proposal())
    members = list(prop.members)
    victim = clients[0]
    i = members.index(victim.own_entry)
    members[i] = MemberEntry(victim.own_entry.verification_key, digest(b"public-share", np.zeros((2, 1), np.uint64)),
                             victim.own_entry.signature)
    with pytest.raises(RosterError, match="own entry"):
        victim.on_key_proposal(EpochProposal(prop.threat_model, prop.crs, tuple(members), prop.b_tilde).to_bytes(tiny))
    with pytest.raises(VerificationError, match="invalid signature"):
        clients[1].on_key_proposal(EpochProposal(prop.threat_model, prop.crs, tuple(members), prop.b_tilde).to_bytes(tiny))


def test_rogue_key_refused_colluding(tiny):
    """A colluder commits to one share, then reveals b_c = b_X - sum(honest b_j) once it has seen theirs."""
    server, opening, clients, replies = _setup(tiny, "malicious-colluding", 3, "rogue")
    colluder = clients[0]
    prop = server.proposal()
    responses = {r.member: r for r in (KeyResponse.from_bytes(tiny, c.on_key_proposal(prop)) for c in clients)}
    honest_sum = add_mod(responses[clients[1].index].b, responses[clients[2].index].b, tiny.key_primes)
    attacker = KeyShare.generate(tiny, server.crs)
    from bastionfl.crypto.polyarith import sub_mod

    rogue = sub_mod(attacker.public_share().b, honest_sum, tiny.key_primes)
    responses[colluder.index] = KeyResponse(colluder.index, b=rogue)
    conf = EpochConfirmation(tuple(responses[i] for i in range(3))).to_bytes(tiny)
    for c in clients[1:]:
        with pytest.raises(VerificationError, match="commitment"):
            c.on_key_confirmation(conf)


@pytest.mark.parametrize("threat", SIGNED)
def test_replayed_and_downgraded_key_messages_refused(tiny, threat):
    """A proposal or confirmation of another epoch; an honest-but-curious opening to a malicious client; a reply
    signed for another epoch."""
    s1, _, c1, r1 = _setup(tiny, threat, 3, f"old-{threat}")
    s2, _, c2, _ = _setup(tiny, threat, 3, f"new-{threat}")
    p1, p2 = s1.proposal(), s2.proposal()
    with pytest.raises(VerificationError, match="CRS"):
        c2[0].on_key_proposal(p1)
    for clients, srv, prop in ((c1, s1, p1), (c2, s2, p2)):
        for c in clients:
            srv.add_key_response(c.on_key_proposal(prop))
    stale = s1.confirmation()
    with pytest.raises(VerificationError):
        c2[0].on_key_confirmation(stale)  # another roster's responses: signatures over another transcript
    _, hbc_opening = ServerEpoch.open(tiny, "honest-but-curious", "downgrade", 0)
    with pytest.raises(VerificationError, match="this client runs"):
        ClientEpoch.open(tiny, hbc_opening, ClientPolicy(threat))
    other, _ = ServerEpoch.open(tiny, threat, "other-run", 0)
    with pytest.raises(VerificationError, match="signature"):
        other.add_key_reply(r1[0])  # signed over another epoch's opening
