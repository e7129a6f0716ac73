"""A deviating server (and colluding clients) during a round: each attack is refused in every setting that
claims to stop it. Everything goes through the public message types and their bytes."""

from __future__ import annotations

import numpy as np
import pytest

from bastionfl.crypto import (
    CryptoFormatError,
    ReplayError,
    RoundShare,
    TranscriptSignature,
    Upload,
    UploadCommitment,
    VerificationError,
)
from bastionfl.crypto.commitment import component_digests
from bastionfl.crypto.identity import EpochIdentity
from bastionfl.crypto.polyarith import add_mod, neg_mod, sum_mod

from .attacks import (
    collect,
    confirmation,
    constant,
    proposal,
    recover_from_share,
    secret_coefficients,
    sign_all,
)
from .engine import key_epoch

SIGNED = ["malicious", "malicious-colluding"]
X = 2**24  # constant aggregate of the key-recovery attack: far above tiny's 2^16 flood, below q/2


def _xs(n=3, size=300, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, size) for _ in range(n)]


def _components(uploads):
    return [np.ascontiguousarray(uploads[i].data[:, 1]) for i in sorted(uploads)]


@pytest.mark.parametrize("threat", SIGNED)
def test_constant_c1_refused(tiny, threat):
    """Key recovery from one share: the server asks every member to decrypt a constant X."""
    fed = key_epoch(tiny, threat, 3, run_id=f"const-{threat}")
    srv, ups = collect(fed, 1, _xs())
    k = next(iter(ups.values())).data.shape[0]
    forged = constant(tiny, k, X)
    prop = proposal(fed, 1, ups, forged)
    sigs = sign_all(fed, prop)  # members sign: they cannot see C1 yet, and the transcript binds H(X)
    if threat == "malicious":
        conf = confirmation(fed, 1, 300, sigs, c1=forged)
        match = "sketch"
    else:  # the real committed c1 list: their sum is not X
        conf = confirmation(fed, 1, 300, sigs, components=_components(ups))
        match = "aggregate"
    for c in fed.clients:
        with pytest.raises(VerificationError, match=match):
            c.on_round_confirmation(conf)
    if threat == "malicious-colluding":  # nor a list built around each client's own entry ([own, X - own, ...])
        comps = _components(ups)
        rigged = [comps[0], add_mod(forged, neg_mod(comps[0], tiny.data_primes), tiny.data_primes), comps[2] * 0]
        with pytest.raises(VerificationError, match="commitment"):
            fed.clients[0].on_round_confirmation(confirmation(fed, 1, 300, sigs, components=rigged))


def test_constant_c1_is_not_stopped_by_honest_but_curious(tiny):
    """Stated limit: honest-but-curious trusts the server; a constant C1 there gives the secret back."""
    fed = key_epoch(tiny, "honest-but-curious", 3, run_id="const-hbc")
    srv, ups = collect(fed, 1, _xs())
    k = next(iter(ups.values())).data.shape[0]
    victim = fed.clients[0]
    share = RoundShare.from_bytes(tiny, victim.on_round_proposal(proposal(fed, 1, ups, constant(tiny, k, X),
                                                                          with_c1=True)))
    assert np.array_equal(recover_from_share(tiny, share.data, X), secret_coefficients(victim))


@pytest.mark.parametrize("threat", SIGNED)
def test_equivocation_refused(tiny, threat):
    """Different transcripts to different members (here: a victim's c1 as the aggregate for one of them)."""
    fed = key_epoch(tiny, threat, 3, run_id=f"equiv-{threat}")
    srv, ups = collect(fed, 1, _xs())
    a, b, c = fed.clients
    true_c1 = sum_mod(_components(ups), tiny.data_primes)
    victim_c1 = _components(ups)[0]
    honest = proposal(fed, 1, ups, true_c1)
    other = proposal(fed, 1, ups, victim_c1)
    sig_a, sig_c = (TranscriptSignature.from_bytes(tiny, x.on_round_proposal(honest)) for x in (a, c))
    sig_b = TranscriptSignature.from_bytes(tiny, b.on_round_proposal(other))
    with pytest.raises(ReplayError, match="another transcript"):
        b.on_round_proposal(honest)  # one transcript per member and round: B will not also sign A's view
    mixed = sorted([sig_a, sig_b, sig_c], key=lambda s: s.member)
    kw = dict(c1=true_c1) if threat == "malicious" else dict(components=_components(ups))
    with pytest.raises(VerificationError, match="different transcript"):
        a.on_round_confirmation(confirmation(fed, 1, 300, mixed, **kw))
    kw = dict(c1=victim_c1) if threat == "malicious" else dict(components=_components(ups))
    with pytest.raises(VerificationError):
        b.on_round_confirmation(confirmation(fed, 1, 300, mixed, **kw))


@pytest.mark.parametrize("threat", SIGNED)
def test_dummy_participant_refused(tiny, threat):
    """The server replaces one member's upload by its own (same index, its own signature)."""
    fed = key_epoch(tiny, threat, 3, run_id=f"dummy-{threat}")
    srv, ups = collect(fed, 1, _xs())
    victim = min(ups)
    fake_key = EpochIdentity.generate()
    data = np.array(ups[victim].data, copy=True)
    data[:, 1] = 0  # a dummy c1 of the server's choosing
    c0d, c1d = component_digests(data)
    honest = ups[victim].commitment
    dummy = UploadCommitment(honest.epoch, 1, victim, honest.length, honest.bound, honest.weight, c0d, c1d)
    ups[victim] = Upload(dummy.signed(fake_key), data)
    prop = proposal(fed, 1, ups, sum_mod(_components(ups), tiny.data_primes))
    for c in fed.clients:
        with pytest.raises(VerificationError, match="signature|altered"):
            c.on_round_proposal(prop)
    with pytest.raises(VerificationError):  # the honest server names it too
        srv2 = fed.server.new_round(2)
        srv2.add_upload(Upload(UploadCommitment(honest.epoch, 2, victim, honest.length, 1.0, 1.0, c0d, c1d)
                               .signed(fake_key), data).to_bytes(tiny))


@pytest.mark.parametrize("threat", SIGNED)
def test_upload_set_below_minimum_refused(tiny, threat):
    """Isolation: U = {victim} (or any set below the policy's minimum) is refused before anything is signed."""
    fed = key_epoch(tiny, threat, 3, run_id=f"small-{threat}")
    srv, ups = collect(fed, 1, _xs())
    victim = min(ups)
    prop = proposal(fed, 1, ups, _components(ups)[0], members=[victim])
    for c in fed.clients:
        with pytest.raises(VerificationError, match="below the minimum"):
            c.on_round_proposal(prop)


@pytest.mark.parametrize("threat", SIGNED + ["honest-but-curious"])
def test_repeated_share_refused(tiny, threat):
    """A second share: same round again, the same commitments under a new round number, the same C1 again."""
    hbc = threat == "honest-but-curious"
    fed = key_epoch(tiny, threat, 4 if hbc else 3, run_id=f"repeat-{threat}")
    srv, ups = collect(fed, 1, _xs(4 if hbc else 3))
    if hbc:  # client A is left out of U, so that the server can forge the others' unsigned commitments
        a = fed.clients[0]
        ups.pop(a.index)
        c1 = sum_mod(_components(ups), tiny.data_primes)
        prop = proposal(fed, 1, ups, c1, with_c1=True)
        a.on_round_proposal(prop)
        with pytest.raises(ReplayError):
            a.on_round_proposal(prop)
        moved = {i: Upload(UploadCommitment(u.commitment.epoch, 2, i, u.commitment.length, u.commitment.bound,
                                            u.commitment.weight, u.commitment.c0_digest, u.commitment.c1_digest),
                           u.data) for i, u in ups.items()}
        with pytest.raises(ReplayError, match="aggregate"):  # the same C1 under a new round number
            a.on_round_proposal(proposal(fed, 2, moved, c1, with_c1=True))
        return
    c1 = sum_mod(_components(ups), tiny.data_primes)
    prop = proposal(fed, 1, ups, c1)
    sigs = sign_all(fed, prop)
    kw = dict(c1=c1) if threat == "malicious" else dict(components=_components(ups))
    conf = confirmation(fed, 1, 300, sigs, **kw)
    fed.clients[0].on_round_confirmation(conf)
    with pytest.raises(ReplayError):
        fed.clients[0].on_round_confirmation(conf)
    with pytest.raises(VerificationError, match="another member, round or epoch"):
        fed.clients[0].on_round_proposal(proposal(fed, 2, ups, c1))  # round-1 commitments in round 2
    if threat == "malicious-colluding":  # a re-randomised list: entries shifted by +r and -r, same sum
        comps = _components(ups)
        r = constant(tiny, comps[0].shape[0], 12345)
        rer = [add_mod(comps[0], r, tiny.data_primes), add_mod(comps[1], neg_mod(r, tiny.data_primes), tiny.data_primes),
               comps[2]]
        with pytest.raises(VerificationError, match="commitment"):
            fed.clients[1].on_round_confirmation(confirmation(fed, 1, 300, sigs, components=rer))


@pytest.mark.parametrize("threat", SIGNED)
def test_retried_round_cannot_drop_one_member_from_the_same_updates(tiny, threat):
    """Round r decrypted with U = {A, B, C}; a 'retry' r+1 where A and B re-send the same updates with U = {A, B}
    would isolate C. A and B refuse to sign the same update into a different upload set."""
    fed = key_epoch(tiny, threat, 3, run_id=f"retry-{threat}")
    from bastionfl.crypto import ClientPolicy

    xs = _xs()
    srv, ups = collect(fed, 1, xs)
    sign_all(fed, proposal(fed, 1, ups, sum_mod(_components(ups), tiny.data_primes)))
    for c in fed.clients:  # a policy that allows two-member sets, to reach the check itself
        c.policy = ClientPolicy(c.threat, min_members=2, min_uploads=2)
    srv2, ups2 = collect(fed, 2, xs)
    keep = sorted(ups2)[:2]
    prop = proposal(fed, 2, ups2, sum_mod([ups2[i].data[:, 1] for i in keep], tiny.data_primes), members=keep)
    for c in fed.clients:
        if c.index in keep:
            with pytest.raises(ReplayError, match="different upload set"):
                c.on_round_proposal(prop)


def test_colluder_c1_chosen_after_the_others_refused(tiny):
    """malicious-colluding: a colluder wants c1 = X - (sum of the others), which needs their c1 first.
    (a) it reveals other ciphertexts than it committed to; (b) its commitment is slipped in after the others
    revealed. Both are refused."""
    fed = key_epoch(tiny, "malicious-colluding", 4, run_id="crafted")
    colluder, honest = fed.clients[0], fed.clients[1:]
    srv = fed.server.new_round(1)
    xs = _xs(4)
    commits = [c.upload(1, x) for c, x in zip(fed.clients, xs)]
    for u in commits[1:]:
        srv.add_commitment(u)
    lst = srv.commitment_list()  # without the colluder: the honest members reveal against it
    reveals = [Upload.from_bytes(tiny, c.on_commitment_list(lst)) for c in honest]
    for u in reveals:
        srv.add_upload(u.to_bytes(tiny))
    others = sum_mod([u.data[:, 1] for u in reveals], tiny.data_primes)
    k = others.shape[0]
    crafted = np.array(reveals[0].data, copy=True)
    crafted[:, 1] = add_mod(constant(tiny, k, X), neg_mod(others, tiny.data_primes), tiny.data_primes)
    c0d, c1d = component_digests(crafted)
    base = reveals[0].commitment
    late = UploadCommitment(base.epoch, 1, colluder.index, base.length, 1.0, 1.0, c0d, c1d).signed(colluder.identity)
    ups = {u.commitment.member: u for u in reveals}
    ups[colluder.index] = Upload(late, crafted)
    prop = proposal(fed, 1, ups, constant(tiny, k, X))
    for c in honest:  # (b) a commitment fixed after they revealed
        with pytest.raises(VerificationError, match="after this client revealed"):
            c.on_round_proposal(prop)
    # (a) the colluder committed in time but reveals something else: the server's own check and every client's
    committed = ups[colluder.index].commitment
    with pytest.raises(VerificationError):
        srv.add_upload(Upload(committed, reveals[0].data).to_bytes(tiny))


@pytest.mark.parametrize("threat", SIGNED)
def test_replayed_messages_refused(tiny, threat):
    """A transcript signature of round 1 reused in round 2, an old upload in a new round, a share for another
    transcript: each refused."""
    fed = key_epoch(tiny, threat, 3, run_id=f"replay-{threat}")
    srv, ups = collect(fed, 1, _xs())
    prop1 = srv.proposal()
    sigs1 = [c.on_round_proposal(prop1) for c in fed.clients]
    for s in sigs1:
        srv.add_signature(s)
    conf1 = srv.confirmation()
    shares1 = [c.on_round_confirmation(conf1) for c in fed.clients]
    srv2, ups2 = collect(fed, 2, _xs(seed=1))
    with pytest.raises(VerificationError):
        srv2.add_upload(next(iter(ups.values())).to_bytes(tiny))  # a round-1 upload offered in round 2
    prop2 = srv2.proposal()
    sigs2 = [TranscriptSignature.from_bytes(tiny, c.on_round_proposal(prop2)) for c in fed.clients[:2]]
    stale = TranscriptSignature.from_bytes(tiny, sigs1[2])
    mixed = sorted(sigs2 + [stale], key=lambda s: s.member)
    c1 = sum_mod(_components(ups2), tiny.data_primes)
    kw = dict(c1=c1) if threat == "malicious" else dict(components=_components(ups2))
    with pytest.raises(VerificationError, match="different transcript"):
        fed.clients[0].on_round_confirmation(confirmation(fed, 2, 300, mixed, **kw))
    with pytest.raises(VerificationError):
        srv2.add_signature(sigs1[2])
    with pytest.raises(VerificationError, match="another round"):
        srv2.add_share(shares1[0])


def test_malformed_shares_and_messages_are_typed(tiny):
    fed = key_epoch(tiny, "malicious", 3, run_id="malformed")
    srv, ups = collect(fed, 1, _xs())
    prop = srv.proposal()
    for s in [c.on_round_proposal(prop) for c in fed.clients]:
        srv.add_signature(s)
    conf = srv.confirmation()
    share = fed.clients[0].on_round_confirmation(conf)
    for bad in (share[:-1], share[:100], share + b"\0", b"", share[:30] + bytes(len(share) - 30)):
        with pytest.raises(CryptoFormatError):
            srv.add_share(bad)
    parsed = RoundShare.from_bytes(tiny, share)
    out_of_range = np.array(parsed.data, copy=True)
    out_of_range[0, 0, 0] = tiny.primes[0]
    with pytest.raises(CryptoFormatError, match="out of range"):
        srv.add_share(RoundShare(parsed.member, 1, parsed.transcript, out_of_range).to_bytes(tiny))
    with pytest.raises(VerificationError, match="transcript"):
        srv.add_share(RoundShare(parsed.member, 1, bytes(32), parsed.data).to_bytes(tiny))
    for bad in (prop[:-1], conf[:-5] + b"\0" * 5, b"junk"):
        with pytest.raises(CryptoFormatError):
            fed.clients[1].on_round_confirmation(bad)
        with pytest.raises(CryptoFormatError):
            fed.clients[1].on_round_proposal(bad)


def test_false_sketch_refused_colluding(tiny):
    """The attack that passes in malicious (test_limits) is refused in malicious-colluding: no sketch is trusted
    there; the clients check every c1 against its commitment and sum them themselves."""
    from bastionfl.crypto.client_round import round_challenge
    from bastionfl.crypto.polyarith import sub_mod
    from bastionfl.crypto.sketch import sketch, sketch_bytes
    from bastionfl.crypto.transcript import transcript_signature_message

    fed = key_epoch(tiny, "malicious-colluding", 3, run_id="false-sketch-mc")
    srv, ups = collect(fed, 1, _xs())
    k = next(iter(ups.values())).data.shape[0]
    forged = constant(tiny, k, X)
    prop = proposal(fed, 1, ups, forged)
    colluder = fed.clients[2]
    sigs = sign_all(fed, prop, fed.clients[:2])
    t = sigs[0].transcript
    lie = sub_mod(sketch(forged, tiny.data_primes, round_challenge(t))[None],
                  sketch(_components(ups)[0], tiny.data_primes, round_challenge(t))[None], tiny.data_primes)[0]
    false = TranscriptSignature(colluder.index, t, lie, colluder.identity.sign(
        b"transcript", transcript_signature_message(t, sketch_bytes(lie))))
    everyone = sorted(sigs + [false], key=lambda s: s.member)
    for comps, match in ((_components(ups), "sketch"), ((), "sketch")):
        with pytest.raises(VerificationError, match=match):
            fed.clients[0].on_round_confirmation(confirmation(fed, 1, 300, everyone, c1=forged, components=comps))
    honest_sig = TranscriptSignature(colluder.index, t, None, colluder.identity.sign(
        b"transcript", transcript_signature_message(t, b"")))
    everyone = sorted(sigs + [honest_sig], key=lambda s: s.member)
    with pytest.raises(VerificationError, match="aggregate"):  # and the committed c1 do not sum to X
        fed.clients[0].on_round_confirmation(confirmation(fed, 1, 300, everyone, components=_components(ups)))
