"""What each setting does NOT stop, demonstrated (these tests pass because the attack works; docs/crypto.md
states each limit). A test here failing means a limit moved: update the documentation."""

from __future__ import annotations

import math

import numpy as np
import tenseal.sealapi as sa
from tenseal.sealapi import util

from bastionfl.crypto import (
    ClientEpoch,
    ClientPolicy,
    KeyResponse,
    KeySetupReply,
    KeyShare,
    MemberEntry,
    RoundShare,
    ServerEpoch,
    TranscriptSignature,
    Upload,
    UploadCommitment,
)
from bastionfl.crypto.client_epoch import key_challenge
from bastionfl.crypto.client_round import round_challenge
from bastionfl.crypto.commitment import component_digests
from bastionfl.crypto.polyarith import add_mod, digest, sub_mod, sum_mod
from bastionfl.crypto.round_messages import commitment_to_bytes
from bastionfl.crypto.scheme import decode, encrypt, partial_decrypt
from bastionfl.crypto.sketch import sketch, sketch_bytes, sketch_sum
from bastionfl.crypto.transcript import key_sketch_message, transcript_signature_message

from .attacks import (
    coefficients,
    collect,
    confirmation,
    constant,
    proposal,
    recover_from_share,
    secret_coefficients,
    sign_all,
)
from .engine import key_epoch, run_round

X = 2**24


def test_limit_without_an_authority_the_server_can_fill_the_roster_with_sybils(tiny):
    """Membership by minimum count only: an epoch of one honest client and two server sybils is accepted, and
    the 'sum' the server decrypts is the victim's update."""
    server, opening = ServerEpoch.open(tiny, "malicious", "sybils", 0)
    policy = ClientPolicy("malicious", min_members=3)
    victim, reply = ClientEpoch.open(tiny, opening, policy)
    server.add_key_reply(reply)
    sybils = []
    for _ in range(2):
        s, r = ClientEpoch.open(tiny, opening, policy)
        sybils.append(s)
        server.add_key_reply(r)
    from .engine import Federation

    fed = Federation(tiny, victim.threat, server, [victim] + sybils)
    prop = server.proposal()
    for c in fed.clients:
        server.add_key_response(c.on_key_proposal(prop))  # no certified roster: accepted
    conf = server.confirmation()
    for c in fed.clients:
        c.on_key_confirmation(conf)
    secret = np.linspace(-1, 1, 200)
    mean, _ = run_round(fed, 1, [secret, np.zeros(200), np.zeros(200)])
    assert np.max(np.abs(3 * mean - secret)) <= tiny.expected_max_error(3, 1.0)  # the server reads the update


def test_limit_malicious_does_not_stop_a_colluders_false_sketch(tiny):
    """malicious assumes honest clients: a colluder that signs sketch(X) - (honest sketches) after seeing the
    challenge makes a constant aggregate X pass, and the victim's share returns its secret key."""
    fed = key_epoch(tiny, "malicious", 3, run_id="false-sketch")
    srv, ups = collect(fed, 1, [np.zeros(300)] * 3)
    k = next(iter(ups.values())).data.shape[0]
    forged = constant(tiny, k, X)
    prop = proposal(fed, 1, ups, forged)
    colluder = fed.clients[2]
    sigs = sign_all(fed, prop, fed.clients[:2])
    t = sigs[0].transcript
    lie = sub_mod(sketch(forged, tiny.data_primes, round_challenge(t))[None],
                  sketch_sum([s.sketch for s in sigs], tiny.data_primes)[None], tiny.data_primes)[0]
    false = TranscriptSignature(colluder.index, t, lie, colluder.identity.sign(
        b"transcript", transcript_signature_message(t, sketch_bytes(lie))))
    conf = confirmation(fed, 1, 300, sorted(sigs + [false], key=lambda s: s.member), c1=forged)
    victim = fed.clients[0]
    share = RoundShare.from_bytes(tiny, victim.on_round_confirmation(conf))
    assert np.array_equal(recover_from_share(tiny, share.data, X), secret_coefficients(victim))


def test_limit_malicious_does_not_stop_a_colluders_rogue_key(tiny):
    """malicious has no key commitments: a colluder that sees the honest public shares (the server forwards
    them) sends b_c = b_X - sum(honest); the epoch key is b_X and the server decrypts honest uploads."""
    server, opening = ServerEpoch.open(tiny, "malicious", "rogue-malicious", 0)
    policy = ClientPolicy("malicious")
    honest = []
    for _ in range(2):
        c, r = ClientEpoch.open(tiny, opening, policy)
        honest.append((c, KeySetupReply.from_bytes(tiny, r)))
        server.add_key_reply(r)
    colluder, _ = ClientEpoch.open(tiny, opening, policy)
    attacker = KeyShare.generate(tiny, server.crs)  # s_X: the server's own key
    rogue = sub_mod(attacker.public_share().b, sum_mod([r.b for _, r in honest], tiny.key_primes), tiny.key_primes)
    entry = MemberEntry.make(colluder.identity, opening_digest(tiny, server), digest(b"public-share", rogue), b"key-share")
    server.add_key_reply(KeySetupReply(colluder.threat, entry, rogue).to_bytes(tiny))
    prop = server.proposal()
    for c, _ in honest:
        server.add_key_response(c.on_key_proposal(prop))
    ck = key_challenge(server.transcript, server.key_digest)
    own = sketch(rogue[None], tiny.key_primes, ck)
    index = [m.verification_key for m in server.members].index(colluder.identity.verification_key)
    server.add_key_response(KeyResponse(index, own, colluder.identity.sign(
        b"key-sketch", key_sketch_message(server.transcript, server.key_digest, sketch_bytes(own)))).to_bytes(tiny))
    conf = server.confirmation()
    for c, _ in honest:
        c.on_key_confirmation(conf)  # accepted: every sketch is honest for the share its member sent
    victim = honest[0][0]
    x = np.linspace(-1, 1, 300)
    up = Upload.from_bytes(tiny, victim.upload(1, x))
    shares = [partial_decrypt(tiny, attacker._decryptor, np.ascontiguousarray(up.data[:, 1]), None)]
    from bastionfl.crypto.decryption import fuse_unchecked

    assert np.max(np.abs(fuse_unchecked(tiny, up.data[:, 0], shares, 300) - x)) < 1e-3


def test_limit_colluder_with_a_malformed_ciphertext_reveals_the_honest_key_sum(tiny):
    """malicious-colluding does not prove that ciphertexts are well formed: a colluder that commits to an
    encryption of zero with a large constant X added to c1 passes every check (commitment, sum, transcript);
    the fused result then carries s~ X, the server (knowing the colluder's secret) reads the sum of the honest
    secrets, and decrypts each honest upload of the epoch. Closing this needs zero-knowledge proofs of
    well-formed ciphertexts (not built)."""
    fed = key_epoch(tiny, "malicious-colluding", 3, run_id="malformed-ct")
    colluder, honest = fed.clients[0], fed.clients[1:]
    big = 2**36  # >> Delta * |sum| (2^31) and the floods (2^18), and 2 * big < q / 2
    srv = fed.server.new_round(1)
    xs = [np.linspace(-1, 1, 300), np.linspace(1, -1, 300) * 0.5]
    commits = [c.upload(1, x) for c, x in zip(honest, xs)]
    data = encrypt(tiny, colluder.encryptor, np.zeros(300))
    data[:, 1] = add_mod(data[:, 1], constant(tiny, data.shape[0], big), tiny.data_primes)
    c0d, c1d = component_digests(data)
    c = UploadCommitment(colluder.epoch, 1, colluder.index, 300, 0.0, 1.0, c0d, c1d).signed(colluder.identity)
    for u in commits + [commitment_to_bytes(tiny, c)]:
        srv.add_commitment(u)
    lst = srv.commitment_list()
    for h in honest:
        srv.add_upload(h.on_commitment_list(lst))
    srv.add_upload(Upload(c, data).to_bytes(tiny))
    prop = srv.proposal()
    for h in honest:
        srv.add_signature(h.on_round_proposal(prop))
    t = srv.transcript  # the colluder signs whatever it is given
    srv.add_signature(TranscriptSignature(colluder.index, t, None, colluder.identity.sign(
        b"transcript", transcript_signature_message(t, b""))).to_bytes(tiny))
    conf = srv.confirmation()
    shares = [RoundShare.from_bytes(tiny, h.on_round_confirmation(conf)).data for h in honest]
    colluder_share = partial_decrypt(tiny, colluder.key._decryptor, srv._sum[:, 1], None)
    fused = sum_mod([srv._sum[:, 0], colluder_share] + shares, tiny.data_primes)
    leak = coefficients(tiny, fused[0, 0]) - big * secret_coefficients(colluder)
    recovered = np.rint(leak / big).astype(np.int64)
    truth = sum(secret_coefficients(h) for h in honest)
    assert np.array_equal(recovered, truth)  # the sum of the honest secrets: with s_colluder, the epoch key
    # ... and with it each honest upload decrypts on its own
    s_all = recovered + secret_coefficients(colluder)
    n, q = tiny.poly_modulus_degree, tiny.primes[0]
    s_ntt = np.array([v % q for v in util.ntt_negacyclic_harvey([int(v) % q for v in s_all],
                     util.NTTTables(int(math.log2(n)), sa.Modulus(q)))], dtype=object)
    up = Upload.from_bytes(tiny, honest[0].on_commitment_list(lst))
    m = (up.data[0, 0, 0].astype(object) + up.data[0, 1, 0].astype(object) * s_ntt) % q
    alone = decode(tiny, np.array(m, dtype=np.uint64).reshape(1, 1, n), 300)
    assert np.max(np.abs(alone - xs[0])) < 1e-3


def opening_digest(params, server):
    return server.opening.digest(params)
