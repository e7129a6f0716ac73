"""A second, independent attack pass: a deviating server (and, where the setting claims to resist them, colluding
clients) against the protocol engine, through the public message types and their bytes. Each test plays one attack
and asserts that it is refused with a typed error, or that it learns nothing."""

from __future__ import annotations

import numpy as np
import pytest

from bastionfl.crypto import (
    ClientEpoch,
    ClientPolicy,
    CommitmentList,
    CryptoError,
    EpochConfirmation,
    EpochProposal,
    KeyResponse,
    KeySetupReply,
    ReplayError,
    RosterError,
    RoundProposal,
    RoundShare,
    ServerEpoch,
    TranscriptSignature,
    UploadCommitment,
    VerificationError,
)
from bastionfl.crypto.client_round import aggregate_digest_of, round_challenge
from bastionfl.crypto.commitment import component_digests
from bastionfl.crypto.identity import PURPOSES, verify
from bastionfl.crypto.polyarith import add_mod, sum_mod
from bastionfl.crypto.round_messages import commitment_from_bytes
from bastionfl.crypto.sketch import sketch, sketch_bytes
from bastionfl.crypto.transcript import member_message, round_transcript, transcript_signature_message
from bastionfl.crypto.wire import Kind, Writer, seal

from .attacks import collect, confirmation, proposal, sign_all
from .engine import key_epoch
from .review import SIGNED, c1_of, components, conf_kw, opened, updates


# ---- equivocation of the roster and of the aggregated key --------------------------------------------------------


@pytest.mark.parametrize("threat", SIGNED)
def test_roster_equivocation_gives_no_usable_epoch(tiny, threat):
    """Four honest members; the server shows A a roster without D and B, C, D the full one (a key D has no share
    of). Malicious: A refuses the key confirmation, since B and C signed their key sketches on the other roster.
    Colluding: A sums the revealed shares of its view itself, but its epoch digest is not the others', so no round
    can mix the two views: neither side signs a proposal holding the other side's commitments."""
    full_srv, clients, replies = opened(tiny, threat, 4, f"roster-eq-{threat}")
    short_srv = ServerEpoch(tiny, full_srv.threat, full_srv.crs)  # a second view over the same replies
    for r in replies:
        full_srv.add_key_reply(r)
        short_srv.add_key_reply(r)
    a, b, c, d = clients
    short_members = sorted((a, b, c), key=lambda x: x.verification_key)
    short = short_srv.proposal([x.verification_key for x in short_members])
    full = full_srv.proposal()
    resp = {a.verification_key: KeyResponse.from_bytes(tiny, a.on_key_proposal(short))}
    for x in (b, c, d):
        resp[x.verification_key] = KeyResponse.from_bytes(tiny, x.on_key_proposal(full))

    def confirmation_for(members):  # every response the server holds, re-indexed to one view's roster
        return EpochConfirmation(tuple(KeyResponse(i, resp[x.verification_key].sketch,
                                                   resp[x.verification_key].signature, resp[x.verification_key].b)
                                       for i, x in enumerate(members))).to_bytes(tiny)

    forged = confirmation_for(short_members)
    conf_full = confirmation_for(sorted(clients, key=lambda x: x.verification_key))
    if threat == "malicious":
        with pytest.raises(VerificationError, match="signature"):
            a.on_key_confirmation(forged)
        for x in (b, c, d):  # and A's sketch was signed on the short roster
            with pytest.raises(VerificationError, match="signature"):
                x.on_key_confirmation(conf_full)
        assert {x.stage for x in clients} == {"proposed"}
        return
    a.on_key_confirmation(forged)
    for x in (b, c, d):
        x.on_key_confirmation(conf_full)
    assert a.stage == "ready" and a.epoch != b.epoch
    commits = {x.index: commitment_from_bytes(tiny, x.upload(1, v)) for x, v in zip((b, c, d), updates())}
    own_a = commitment_from_bytes(tiny, a.upload(1, updates(1, seed=3)[0]))
    # to A: its own commitment and two of the others' (at A's indices): A refuses (other epoch)
    others = [commits[b.index], commits[c.index]]
    view_a = sorted([(a.index, own_a)] + [(short_members.index(x), cm) for x, cm in zip((b, c), others)])
    prop_a = RoundProposal(1, 300, tuple(i for i, _ in view_a), tuple(cm for _, cm in view_a), bytes(32))
    with pytest.raises(VerificationError, match="another member, round or epoch"):
        a.on_round_proposal(prop_a.to_bytes(tiny))
    # to B, C, D: A's commitment (re-indexed, so its signature no longer holds either) slipped into the full set
    mixed = dict(commits)
    a_full = sorted(x.verification_key for x in clients).index(a.verification_key)
    mixed[a_full] = UploadCommitment(own_a.epoch, 1, a_full, own_a.length, own_a.bound, own_a.weight,
                                      own_a.c0_digest, own_a.c1_digest, own_a.signature)
    order = sorted(mixed)
    prop_b = RoundProposal(1, 300, tuple(order), tuple(mixed[i] for i in order), bytes(32))
    for x in (b, c, d):
        with pytest.raises(VerificationError):
            x.on_round_proposal(prop_b.to_bytes(tiny))


def test_key_equivocation_is_caught_by_the_key_sketch(tiny):
    """Malicious: one member is shown another aggregated key (here its own public share alone, a key of which the
    server would hold the rest) while the others see the honest one. Its signed key sketch binds the key it saw, so
    the others' sketches do not check under it and its own does not check under theirs: nobody becomes ready."""
    server, clients, replies = opened(tiny, "malicious", 3, "key-eq")
    for r in replies:
        server.add_key_reply(r)
    honest = server.proposal()
    prop = EpochProposal.from_bytes(tiny, honest)
    victim = clients[0]
    evil = np.array(KeySetupReply.from_bytes(tiny, replies[0]).b, copy=True)
    responses = {}
    for c in clients:
        shown = EpochProposal(prop.threat_model, prop.crs, prop.members, evil).to_bytes(tiny) if c is victim else honest
        r = KeyResponse.from_bytes(tiny, c.on_key_proposal(shown))
        responses[r.member] = r
    conf = EpochConfirmation(tuple(responses[i] for i in range(3))).to_bytes(tiny)
    for c in clients:
        with pytest.raises(VerificationError):
            c.on_key_confirmation(conf)
        assert c.stage != "ready"


# ---- replay across rounds, epochs and runs; domain separation --------------------------------------------------


@pytest.mark.parametrize("threat", SIGNED)
def test_messages_of_another_run_or_epoch_are_refused(tiny, threat):
    """Three federations: run A epoch 0, run B epoch 0, run A epoch 1, all at round 7. Proposals, uploads and
    confirmations of one are refused by the other's clients and server; key-setup messages too."""
    fa = key_epoch(tiny, threat, 3, run_id=f"xr-a-{threat}")
    _, ups_a = collect(fa, 7, updates(seed=1))
    prop_a = proposal(fa, 7, ups_a, c1_of(ups_a, tiny))
    sigs_a = sign_all(fa, prop_a)
    conf_a = confirmation(fa, 7, 300, sigs_a, **conf_kw(threat, ups_a, tiny))
    for other in (key_epoch(tiny, threat, 3, run_id=f"xr-b-{threat}"),
                  key_epoch(tiny, threat, 3, run_id=f"xr-a-{threat}", epoch=1)):
        srv_o, ups_o = collect(other, 7, updates(seed=2))
        for c in other.clients:
            with pytest.raises(VerificationError, match="epoch"):
                c.on_round_proposal(prop_a)
            with pytest.raises(CryptoError):  # no transcript signed for round 7 yet
                c.on_round_confirmation(conf_a)
        rnd = other.server.new_round(7)
        with pytest.raises(VerificationError, match="another round or epoch"):
            if threat == "malicious":
                rnd.add_upload(ups_a[0].to_bytes(tiny))
            else:
                rnd.add_commitment(seal(Kind.UPLOAD_COMMITMENT, tiny,
                                        ups_a[0].commitment.write(Writer()).getvalue()))
        prop_o = proposal(other, 7, ups_o, c1_of(ups_o, tiny))
        sign_all(other, prop_o)
        for c in other.clients:  # signed round 7 here: A's confirmation is for another transcript
            with pytest.raises(VerificationError):
                c.on_round_confirmation(conf_a)
    # key setup: a reply signed for run X is refused by run Y's server; X's proposal by Y's clients
    srv_x, _, replies_x = opened(tiny, threat, 3, "xr-run-x")
    srv_y, clients_y, _ = opened(tiny, threat, 3, "xr-run-y")
    for r in replies_x:
        srv_x.add_key_reply(r)
        with pytest.raises(VerificationError):
            srv_y.add_key_reply(r)
    prop_x = srv_x.proposal()
    for c in clients_y:
        with pytest.raises(VerificationError):
            c.on_key_proposal(prop_x)


@pytest.mark.parametrize("threat", SIGNED)
def test_a_signature_never_counts_in_another_context(tiny, threat):
    """Every signature a member makes (roster entry, key sketch, upload commitment, round transcript) verifies
    under its own purpose only; and a member's commitment signature or a round-1 transcript signature offered as
    its round-2 transcript signature is refused."""
    fed = key_epoch(tiny, threat, 3, run_id=f"domain-{threat}")
    member = fed.clients[1]
    vk = member.verification_key
    opening = member.opening.digest(tiny)
    entry = member.own_entry
    made = [(b"key-commit" if threat == "malicious-colluding" else b"key-share",
             member_message(opening, entry.share_digest, vk), entry.signature)]
    _, ups1 = collect(fed, 1, updates())
    com = ups1[member.index].commitment
    made.append((b"upload", com.message, com.signature))
    prop1 = proposal(fed, 1, ups1, c1_of(ups1, tiny))
    sigs1 = sign_all(fed, prop1)
    mine1 = sigs1[member.index]
    made.append((b"transcript", transcript_signature_message(
        mine1.transcript, b"" if mine1.sketch is None else sketch_bytes(mine1.sketch)), mine1.signature))
    for purpose, message, signature in made:
        assert verify(vk, purpose, message, signature)
        for other in PURPOSES:
            if other != purpose:
                assert not verify(vk, other, message, signature)
    _, ups2 = collect(fed, 2, updates(seed=5))
    prop2 = proposal(fed, 2, ups2, c1_of(ups2, tiny))
    sigs2 = sign_all(fed, prop2)
    t2 = sigs2[0].transcript
    for forged in (TranscriptSignature(member.index, t2, sigs2[member.index].sketch, com.signature),
                   TranscriptSignature(member.index, t2, sigs2[member.index].sketch, mine1.signature),
                   mine1):
        mixed = [forged if s.member == member.index else s for s in sigs2]
        with pytest.raises(VerificationError):
            fed.clients[0].on_round_confirmation(confirmation(fed, 2, 300, mixed, **conf_kw(threat, ups2, tiny)))
    fed.clients[0].on_round_confirmation(confirmation(fed, 2, 300, sigs2, **conf_kw(threat, ups2, tiny)))  # honest: ok


# ---- the sketch: grinding and edge positions -------------------------------------------------------------------


def _kernel_vector(rows: list[list[int]], q: int) -> list[int]:
    """A non-zero solution x of rows · x = 0 (mod q), for more unknowns than equations (Gaussian elimination)."""
    m = [list(r) for r in rows]
    n = len(m[0])
    pivots, r = [], 0
    for col in range(n):
        piv = next((i for i in range(r, len(m)) if m[i][col] % q), None)
        if piv is None:
            continue
        m[r], m[piv] = m[piv], m[r]
        inv = pow(m[r][col], -1, q)
        m[r] = [v * inv % q for v in m[r]]
        for i in range(len(m)):
            if i != r and m[i][col] % q:
                f = m[i][col]
                m[i] = [(vi - f * vr) % q for vi, vr in zip(m[i], m[r])]
        pivots.append(col)
        r += 1
    free = next(col for col in range(n) if col not in pivots)
    x = [0] * n
    x[free] = 1
    for i, col in enumerate(pivots):
        x[col] = (-m[i][free]) % q
    return x


def test_sketch_challenge_is_fixed_only_after_the_aggregate(tiny):
    """Malicious: the server knows every c1 (the uploads), so it can compute every sketch offline. (a) It builds
    delta != 0 orthogonal to the challenge of the honest transcript: C1 + delta then has another digest, hence
    another transcript and challenge, and the members refuse. (b) 300 offline grinding attempts: none passes.
    (c) A delta on the very last coefficient of the last ciphertext is caught."""
    fed = key_epoch(tiny, "malicious", 3, run_id="grind")
    q = tiny.data_primes[0]
    length = tiny.floats_per_ciphertext + 52  # two ciphertexts
    xs = [np.random.default_rng(i).uniform(-1, 1, length) for i in range(3)]
    _, ups = collect(fed, 1, xs)
    c1 = c1_of(ups, tiny)
    shape = c1.shape
    k = shape[0]
    honest = RoundProposal.from_bytes(tiny, proposal(fed, 1, ups, c1))
    t0 = round_transcript(fed.clients[0].epoch, 1, length, k, honest.uploads,
                          [cm.digest for cm in honest.commitments], aggregate_digest_of(c1))
    rho0 = round_challenge(t0)
    positions = [(j % k, 0, (j * 977) % shape[2]) for j in range(11)]
    columns = []
    for pos in positions:
        unit = np.zeros(shape, dtype=np.uint64)
        unit[pos] = 1
        columns.append([int(v) for v in sketch(unit, tiny.data_primes, rho0)[0]])
    rows = [[columns[j][t] for j in range(11)] for t in range(len(columns[0]))]
    x = _kernel_vector(rows, q)
    delta = np.zeros(shape, dtype=np.uint64)
    for pos, v in zip(positions, x):
        delta[pos] = v
    assert np.any(delta) and not np.any(sketch(delta, tiny.data_primes, rho0))  # passes the OLD challenge
    forged = add_mod(c1, delta, tiny.data_primes)
    sigs = sign_all(fed, proposal(fed, 1, ups, forged))  # members sign the transcript that binds H(forged)
    for c in fed.clients:
        with pytest.raises(VerificationError, match="sketch"):
            c.on_round_confirmation(confirmation(fed, 1, length, sigs, c1=forged))
    # (b) offline grinding: each candidate's own challenge must annihilate its delta
    rng = np.random.default_rng(7)
    passes = 0
    for _ in range(300):
        d = np.zeros(shape, dtype=np.uint64)
        d[rng.integers(k), 0, rng.integers(shape[2])] = int(rng.integers(1, q))
        cand = add_mod(c1, d, tiny.data_primes)
        t = round_transcript(fed.clients[0].epoch, 1, length, k, honest.uploads,
                             [cm.digest for cm in honest.commitments], aggregate_digest_of(cand))
        passes += not np.any(sketch(d, tiny.data_primes, round_challenge(t)))
    assert passes == 0
    # (c) the last coefficient of the last ciphertext, at a fresh round
    _, ups2 = collect(fed, 2, xs)
    c1b = c1_of(ups2, tiny)
    last = np.zeros(shape, dtype=np.uint64)
    last[-1, -1, -1] = 1
    edge = add_mod(c1b, last, tiny.data_primes)
    sigs2 = sign_all(fed, proposal(fed, 2, ups2, edge))
    with pytest.raises(VerificationError, match="sketch"):
        fed.clients[0].on_round_confirmation(confirmation(fed, 2, length, sigs2, c1=edge))


# ---- a second share on a related ciphertext ---------------------------------------------------------------------


@pytest.mark.parametrize("threat", SIGNED)
def test_no_second_share_on_a_related_aggregate(tiny, threat):
    """After its share on round 1, a member is asked for: round 1 again with C1 + delta (a new transcript for a
    round it signed), the same C1 as the aggregate of round 2 (fresh uploads), round 2 over round 1's commitments,
    and round 1's aggregate under round 2's honest transcript. Each is refused, and round 2 still works."""
    fed = key_epoch(tiny, threat, 3, run_id=f"related-{threat}")
    _, ups = collect(fed, 1, updates())
    c1 = c1_of(ups, tiny)
    sigs = sign_all(fed, proposal(fed, 1, ups, c1))
    for c in fed.clients:
        c.on_round_confirmation(confirmation(fed, 1, 300, sigs, **conf_kw(threat, ups, tiny)))
    delta = np.zeros_like(c1)
    delta[0, 0, 5] = 1
    shifted = add_mod(c1, delta, tiny.data_primes)
    victim = fed.clients[0]
    with pytest.raises(ReplayError):
        victim.on_round_proposal(proposal(fed, 1, ups, shifted))
    _, ups2 = collect(fed, 2, updates(seed=9))
    with pytest.raises(ReplayError):  # round 1's aggregate as round 2's: never a second share on one aggregate
        victim.on_round_proposal(proposal(fed, 2, ups2, c1))
    with pytest.raises(VerificationError, match="another member, round or epoch"):
        victim.on_round_proposal(proposal(fed, 2, ups, c1))
    sigs2 = sign_all(fed, proposal(fed, 2, ups2, c1_of(ups2, tiny)))
    if threat == "malicious":
        with pytest.raises(VerificationError):
            victim.on_round_confirmation(confirmation(fed, 2, 300, sigs2, c1=c1))
    else:
        with pytest.raises(VerificationError):
            victim.on_round_confirmation(confirmation(fed, 2, 300, sigs2, components=components(ups)))
    share = RoundShare.from_bytes(tiny, victim.on_round_confirmation(
        confirmation(fed, 2, 300, sigs2, **conf_kw(threat, ups2, tiny))))
    assert share.round_number == 2 and share.transcript == sigs2[0].transcript


# ---- shrinking U and the roster ---------------------------------------------------------------------------------


@pytest.mark.parametrize("threat", SIGNED)
def test_upload_set_and_roster_cannot_be_shrunk_below_the_clients_minimum(tiny, threat):
    """Five members whose policy asks for 4 uploads and 4 members: U of 3 (two members dropped), a roster of 3
    or 4 out of 5 certified keys, a roster missing the client itself: each refused, whatever the server's own
    settings."""
    policy = ClientPolicy(threat, min_members=4, min_uploads=4)
    fed = key_epoch(tiny, threat, 5, run_id=f"shrink-{threat}", policy=policy)
    _, ups = collect(fed, 1, updates(5))
    keep = sorted(ups)[:3]
    small = proposal(fed, 1, ups, sum_mod([ups[i].data[:, 1] for i in keep], tiny.data_primes), members=keep)
    for c in fed.clients:
        with pytest.raises(VerificationError, match="below the minimum"):
            c.on_round_proposal(small)
    server, _ = ServerEpoch.open(tiny, threat, f"shrink-roster-{threat}", 0)
    clients = [ClientEpoch.open(tiny, server.opening.to_bytes(tiny), policy) for _ in range(5)]
    for _, r in clients:
        server.add_key_reply(r)
    certified = [c.verification_key for c, _ in clients]
    for subset in (certified[:3], certified[:4]):
        other = ServerEpoch(tiny, server.threat, server.crs)
        for _, r in clients:
            other.add_key_reply(r)
        prop = other.proposal(subset)
        for c, _ in clients:
            with pytest.raises(RosterError):
                c.on_key_proposal(prop, certified_keys=certified)
    prop = server.proposal(certified[1:])  # the authority's five keys, the server proposes four
    with pytest.raises(RosterError):
        clients[0][0].on_key_proposal(prop, certified_keys=certified[1:])  # not a member: its entry is missing


# ---- malicious-colluding: a colluder equivocates its commitment ------------------------------------------------


def test_colluder_commitment_equivocation_is_refused(tiny):
    """malicious-colluding, two honest members and two colluders: a colluder signs two commitments for one round
    and the server shows each honest member a list with a different one. Each reveals against its own list; no
    proposal is then signed by both (one of them sees a commitment fixed after it revealed)."""
    fed = key_epoch(tiny, "malicious-colluding", 4, run_id="two-commitments")
    honest, colluders = fed.clients[:2], fed.clients[2:]
    commits = [commitment_from_bytes(tiny, c.upload(1, x)) for c, x in zip(fed.clients, updates(4))]
    liar = colluders[0]
    first = next(cm for cm in commits if cm.member == liar.index)
    data = np.array(liar.rounds[1].own, copy=True)
    data[0, 1, 0, 0] = (int(data[0, 1, 0, 0]) + 1) % tiny.data_primes[0]
    c0d, c1d = component_digests(data)
    second = UploadCommitment(first.epoch, 1, liar.index, first.length, first.bound, first.weight, c0d,
                              c1d).signed(liar.identity)
    lists = []
    for variant in (first, second):
        cs = sorted([cm for cm in commits if cm.member != liar.index] + [variant], key=lambda cm: cm.member)
        lists.append(CommitmentList(1, tuple(cs)))
    for h, lst in zip(honest, lists):
        h.on_commitment_list(lst.to_bytes(tiny))
    for h, lst in zip(honest, lists):
        with pytest.raises(ReplayError):  # one list per round: the other view is not revealed against as well
            h.on_commitment_list(lists[1 - lists.index(lst)].to_bytes(tiny))
    for lst in lists:
        prop = RoundProposal(1, 300, tuple(cm.member for cm in lst.commitments), lst.commitments, bytes(32))
        refusals = 0
        for h in honest:
            try:
                h.on_round_proposal(prop.to_bytes(tiny))
            except VerificationError as exc:
                assert "after this client revealed" in str(exc)
                refusals += 1
        assert refusals == 1  # the honest member that saw the other list refuses: no transcript signed by both


# ---- FedAvg weights: one common norm ----------------------------------------------------------------------------


@pytest.mark.parametrize("threat", SIGNED)
def test_skewed_fedavg_weights_cannot_isolate_an_update(tiny, threat):
    """The weight ``n_k / norm`` takes its norm from the server. Sent per client, weight 1 for the victim and 1e-6
    for the others make the decrypted "sum" the victim's update. Each client commits its example count with its
    weight and refuses (at the reveal or the transcript) a set whose weights are not one multiple of the counts;
    proportional weights (any common norm) still give plaintext FedAvg."""
    fed = key_epoch(tiny, threat, 3, run_id=f"weights-{threat}")
    xs, counts = updates(), [120, 80, 200]

    def run(number, norms):
        srv = fed.server.new_round(number)
        ups = [c.upload(number, x * (n / m), n / m, examples=n) for c, x, n, m in zip(fed.clients, xs, counts, norms)]
        if threat == "malicious-colluding":
            for u in ups:
                srv.add_commitment(u)
            lst = srv.commitment_list()
            ups = [c.on_commitment_list(lst) for c in fed.clients]
        for u in ups:
            srv.add_upload(u)
        prop = srv.proposal()
        for c in fed.clients:
            srv.add_signature(c.on_round_proposal(prop))
        conf = srv.confirmation()
        for c in fed.clients:
            srv.add_share(c.on_round_confirmation(conf))
        return srv.weighted_mean()

    victim_first = [counts[0], counts[1] * 10**6, counts[2] * 10**6]
    with pytest.raises(VerificationError, match="common multiple"):
        run(1, victim_first)
    mean = run(2, [float(sum(counts))] * 3)  # a common norm: the FedAvg of the three (within tiny's precision)
    expected = sum(n * x for n, x in zip(counts, xs)) / sum(counts)
    assert np.abs(mean - expected).max() < 0.05 < min(np.abs(mean - x).max() for x in xs)
    with pytest.raises(VerificationError):
        fed.clients[0].upload(3, xs[0], 1.0, examples=-1)


@pytest.mark.parametrize("threat", SIGNED)
def test_updates_from_different_models_never_share_an_upload_set(tiny, threat):
    """Model inconsistency: the server sends the victim the real model and everyone else one whose updates vanish,
    so that the sum of U is the victim's update. Each client commits the digest of the model it trained; a set
    mixing two digests is refused (at the reveal or the transcript), one common digest goes through."""
    fed = key_epoch(tiny, threat, 3, run_id=f"models-{threat}")
    real, other = bytes([1]) * 32, bytes([2]) * 32

    def uploads(number, contexts):
        srv = fed.server.new_round(number)
        ups = [c.upload(number, x, 1.0, context=ctx) for c, x, ctx in zip(fed.clients, updates(), contexts)]
        if threat == "malicious-colluding":
            for u in ups:
                srv.add_commitment(u)
            lst = srv.commitment_list()
            return srv, lst, [c.on_commitment_list(lst) for c in fed.clients]
        return srv, None, ups

    with pytest.raises(VerificationError, match="another model"):
        srv, _, ups = uploads(1, [real, other, other])
        for u in ups:
            srv.add_upload(u)
        fed.clients[0].on_round_proposal(srv.proposal())
    srv, _, ups = uploads(2, [real] * 3)
    for u in ups:
        srv.add_upload(u)
    prop = srv.proposal()
    for c in fed.clients:
        srv.add_signature(c.on_round_proposal(prop))
    with pytest.raises(VerificationError):
        fed.clients[0].upload(3, updates(1)[0], context=b"short")


def test_limit_colluders_fill_the_upload_set_around_one_honest_member(tiny):
    """Stated limit (docs/crypto.md §7.2): the guarantee is "the sum of U", and U may hold one honest member. Four
    members, two colluders, min_uploads = 3: U = {victim, colluder, colluder} is signed and shared by everyone,
    the other honest member included (it is not in U and sees nothing wrong), and the colluders' known updates
    subtract out. This test passes because the attack works."""
    fed = key_epoch(tiny, "malicious-colluding", 4, run_id="fill-u")
    xs = updates(4, seed=11)
    victim, bystander, *colluders = fed.clients
    srv = fed.server.new_round(1)
    members = (victim, *colluders)
    commits = {c.index: c.upload(1, xs[fed.clients.index(c)]) for c in members}
    for u in commits.values():
        srv.add_commitment(u)
    lst = srv.commitment_list()
    for c in members:
        srv.add_upload(c.on_commitment_list(lst))
    prop = srv.proposal()
    for c in fed.clients:
        srv.add_signature(c.on_round_proposal(prop))
    conf = srv.confirmation()
    for c in fed.clients:
        srv.add_share(c.on_round_confirmation(conf))
    isolated = srv.result() - xs[2] - xs[3]
    assert np.abs(isolated - xs[0]).max() < 0.05
    del bystander
