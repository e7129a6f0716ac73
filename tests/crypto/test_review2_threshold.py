"""Second review of t-of-n decryption: a malicious server, alone or with up to ``c_max`` colluding members, against
the attempt re-randomisation, the decrypting set and the new message fields. Through the public message types and
their bytes; a test that passes documents a property that held."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bastionfl.crypto import CryptoError, RoundConfirmation, RoundShare
from bastionfl.crypto.commitment import component_digests
from bastionfl.crypto.round_messages import commitment_to_bytes
from bastionfl.crypto.shamir import lagrange_at_zero
from bastionfl.crypto.smudging import FLOOD_TERMS
from bastionfl.crypto.threshold import ThresholdRule, attempt_mask, c_max

from .test_review_threshold import _from_ntt
from .threshold_engine import dealt_epoch, signed_round, threshold_epoch

N_MEMBERS = 20
RULE = ThresholdRule.parse(0.6)  # t = 12, c_max = 3 = the default min_uploads: U may hold colluders alone


def _colluder_upload(client, round_number: int, c1_value: int) -> bytes:
    """A colluder's signed commitment to a 'ciphertext' whose c1 is the constant polynomial ``c1_value`` (NTT form:
    the same value in every slot). Nothing checks that an upload is a fresh encryption: its digest is all that
    is bound."""
    client.upload(round_number, np.zeros(10), 1.0)
    rec = client.rounds[round_number]
    data = np.array(rec.own, copy=True)
    data[:, 1] = np.uint64(c1_value)
    c0d, c1d = component_digests(data)
    rec.commitment = dataclasses.replace(rec.commitment, c0_digest=c0d, c1_digest=c1d).signed(client.identity)
    rec.own = data
    return commitment_to_bytes(client.params, rec.commitment)


def _centred(x: int, q: int) -> int:
    x %= q
    return x - q if x > q // 2 else x


def test_chosen_aggregate_from_colluders_does_not_reveal_a_threshold_key_share(tiny):
    """malicious-colluding, c = c_max = 3 colluders upload alone (U of 3 = min_uploads) with a c1 they choose: the
    constant ``w * lambda^-1``. A member's Shamir key share k is full-size (N-of-N's s_i is ternary, which the flood
    hides whatever C1 is), so its share on attempt 0, ``lambda k C1 + E = w k + E``, gives every coefficient of k to
    within the flood: a hidden-number problem. Round by round the server scales w so the next share resolves the
    remaining interval; two or three rounds give k exactly, and t - c honest keys with the colluders' own give the
    epoch secret. Attempt 0 must be re-randomised too: the aggregate a member multiplies may never be chosen."""
    assert len(tiny.data_primes) == 1
    q = tiny.data_primes[0]
    fed = threshold_epoch(tiny, "malicious-colluding", N_MEMBERS, RULE, run_id="review2-chosen-c1")
    t = fed.server.threshold
    colluders = tuple(range(c_max(t, N_MEMBERS)))
    victim = len(colluders)
    s = tuple(range(t))  # the colluders and t - c honest members: the same S (same lambda) every round
    lam = lagrange_at_zero(list(s), tiny.data_primes)[victim][0]
    bound = FLOOD_TERMS * 2 ** tiny.flood_bits(N_MEMBERS, len(colluders), 1)
    centre = np.zeros(tiny.poly_modulus_degree, dtype=object)
    radius = q // 2
    for rnd in range(1, 5):
        w = max(1, q // (4 * radius))
        srv = fed.server.new_round(rnd)
        for i in colluders:
            value = w * pow(lam, -1, q) % q if i == 0 else 0  # C1 = the sum of U's c1: one colluder sets it
            srv.add_commitment(_colluder_upload(fed.clients[i], rnd, value))
        lst = srv.commitment_list()
        for i in colluders:
            srv.add_upload(fed.clients[i].on_commitment_list(lst))
        prop = srv.proposal()
        for i in s:
            srv.add_signature(fed.clients[i].on_round_proposal(prop))
        share = RoundShare.from_bytes(tiny, fed.clients[victim].on_round_confirmation(srv.confirmation(0, s))).data
        coeffs = _from_ntt(tiny, share[0])[0]
        for j, d in enumerate(coeffs.tolist()):
            r = _centred(int(d) - w * int(centre[j]), q)  # = w * delta + E, |w delta| <= q / 4
            centre[j] = int(centre[j]) + (2 * r + w) // (2 * w)
        radius = max(1, (bound + w // 2) // w + 1)
        if w > 2 * bound:
            break
    guess = np.array([int(x) % q for x in centre], dtype=np.uint64)
    truth = _from_ntt(tiny, fed.clients[victim].threshold._share)[0]
    assert not np.array_equal(guess, truth), "the victim's threshold key share was recovered from chosen aggregates"


def test_every_attempt_is_re_randomised_by_the_transcript(tiny):
    """The mask of every attempt, the first included, is a ternary polynomial fixed by (transcript, attempt): never
    zero, different per attempt and per transcript, and the same for member and server."""
    masks = [attempt_mask(tiny, bytes(32), a) for a in range(3)]
    assert all(m is not None and np.any(m) for m in masks)
    assert not np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[1], masks[2])
    assert not np.array_equal(masks[0], attempt_mask(tiny, bytes(31) + b"\x01", 0))
    assert np.array_equal(masks[0], attempt_mask(tiny, bytes(32), 0))


def test_a_member_of_u_is_decrypted_without_its_signature(tiny):
    """malicious-colluding t-of-n: the decrypting set S needs t signers and U's c1 are checked against their
    commitments, but no member of U has to sign. Its revealed upload is decrypted by t others: a node must count an
    upload as spent when it reveals it, not when it signs (the node side: ``tests/integration/test_review2_node``)."""
    n = 8
    fed = threshold_epoch(tiny, "malicious-colluding", n, RULE, run_id="review2-unsigned-u")
    t = fed.server.threshold
    xs = [np.full(10, 0.1 * (i + 1)) for i in range(n)]
    srv = signed_round(fed, 1, xs, uploaders=(0, 1, 2), signers=range(3, 3 + t))
    s = tuple(range(3, 3 + t))
    conf = srv.confirmation(0, s)
    for i in s:
        srv.add_share(fed.clients[i].on_round_confirmation(conf))
    assert np.allclose(srv.result(), xs[0] + xs[1] + xs[2], atol=2e-2)


def test_limit_a_fraction_threshold_follows_the_roster_the_server_chooses(tiny):
    """Stated limit: a fraction rule gives t = ceil(f n) for the roster of the epoch, which the server chooses
    (down to ``min_members``, among the certified nodes it admits). Pinned to 0.6 for a federation of 20 (t = 12,
    c_max = 3), a node still takes an epoch of 5 (t = 3, c_max = 0): three colluders in it hold t key shares and
    decrypt the victim's own upload. A count pin (t fixed; a smaller roster only raises c_max) or a ``min-members``
    pin at which c_max(t, n) still covers the colluders closes it."""
    n = 5
    fed = threshold_epoch(tiny, "malicious-colluding", n, RULE, run_id="review2-small-roster")
    t = fed.server.threshold
    assert (t, c_max(t, n)) == (3, 0)
    secret = np.linspace(-0.5, 0.5, 10)
    from bastionfl.crypto.decryption import decode_checked

    fed.clients[0].upload(1, secret, 1.0)  # the signed commitment; the reveal carries these ciphertexts
    data = fed.clients[0].rounds[1].own
    assert fed.clients[0].rounds[1].commitment.matches(data)
    colluders = (1, 2, 3)
    shares = [fed.clients[i].threshold.decryption_share(tiny, fed.clients[i].key, 1, 0, np.ascontiguousarray(
        data[:, 1]), colluders, i, n, 1, transcript=b"round-1") for i in colluders]
    assert np.allclose(decode_checked(tiny, data[:, 0], shares, 10, 1.0, n, 1), secret, atol=2e-2)  # tiny: ~1e-2


def test_equivocated_decrypting_sets_on_one_attempt_decrypt_nothing_more(tiny):
    """The same attempt number with S1 to some members and S2 to another: each member answers the attempt once,
    with the Lagrange coefficient of the set it was shown, so the shares of S2 = S1 - {4} + {5} do not combine (the
    coefficients of 0..3 are S1's; rescaling them multiplies their floods by full-size numbers)."""
    from bastionfl.crypto import RangeCheckError
    from bastionfl.crypto.decryption import decode_checked

    n = 7
    fed = threshold_epoch(tiny, "malicious-colluding", n, RULE, run_id="review2-equivocation")
    xs = [np.full(10, 0.05) for _ in range(n)]
    srv = signed_round(fed, 1, xs)
    s1, s2 = (0, 1, 2, 3, 4), (0, 1, 2, 3, 5)
    conf1 = srv.confirmation(0, s1)
    conf2 = dataclasses.replace(RoundConfirmation.from_bytes(tiny, conf1), decrypting=s2).to_bytes(tiny)
    shares = {i: RoundShare.from_bytes(tiny, fed.clients[i].on_round_confirmation(conf1)).data for i in s1[:4]}
    shares[5] = RoundShare.from_bytes(tiny, fed.clients[5].on_round_confirmation(conf2)).data
    with pytest.raises(CryptoError):  # members 0..3 answered attempt 0 already: no S2 share from them
        fed.clients[0].on_round_confirmation(conf2)
    from bastionfl.crypto.threshold import attempt_aggregate

    c0 = attempt_aggregate(tiny, np.ascontiguousarray(srv._sum[:, 0]), fed.server.b_tilde, srv.transcript, 0)
    try:
        out = decode_checked(tiny, c0, [shares[i] for i in s2], 10, 1.0 * n, n, n)
    except RangeCheckError:
        return
    assert not np.allclose(out, sum(xs), atol=1e-2)


def test_malformed_dealt_shares_are_refused_and_spend_nothing(tiny):
    """T2 bytes a server alters: truncated, a flipped byte in a box, the recipient relabelled, two boxes swapped,
    a box of another member's message, one box dropped. Each is a typed refusal that leaves the member able to
    combine the true message afterwards."""
    from bastionfl.crypto.threshold_messages import DealtShares

    clients, confirmation, dealt = _dealt_epoch(tiny, "review2-dealt")
    true = DealtShares.from_bytes(tiny, dealt[0])
    other = DealtShares.from_bytes(tiny, dealt[1])
    flipped = bytearray(true.boxes[1][1])
    flipped[40] ^= 1
    boxes = list(true.boxes)
    bad = [dealt[0][:-1], dealt[0] + b"\x00",
           DealtShares(0, (boxes[0], (boxes[1][0], bytes(flipped)), *boxes[2:])).to_bytes(tiny),
           DealtShares(1, true.boxes).to_bytes(tiny),
           DealtShares(0, ((boxes[0][0], boxes[1][1]), (boxes[1][0], boxes[0][1]), *boxes[2:])).to_bytes(tiny),
           DealtShares(0, ((boxes[0][0], other.boxes[1][1]), *boxes[1:])).to_bytes(tiny),
           DealtShares(0, tuple(boxes[:-1])).to_bytes(tiny)]
    for c in clients:
        c.on_key_confirmation(confirmation)
    for data in bad:
        with pytest.raises(CryptoError):
            clients[0].on_dealt_shares(data)
        assert not clients[0].threshold.ready
    for c in clients:
        c.on_dealt_shares(dealt[c.index])
    assert all(c.threshold.ready for c in clients)
    with pytest.raises(CryptoError):  # and only once
        clients[0].on_dealt_shares(dealt[0])


def _dealt_epoch(params, run_id: str, epoch: int = 0, n: int = 5):  # noqa: ANN001, ANN202
    """K1, K2, T1 and the key confirmation of a t-of-n epoch; the members have not combined their dealt shares."""
    server, clients = dealt_epoch(params, "malicious-colluding", n, RULE, run_id, epoch)
    return clients, server.confirmation(), server.take_dealt_shares()


def test_dealt_shares_of_another_epoch_do_not_open(tiny):
    """Boxes replayed from an earlier epoch of the same run (same member positions): the exchange keys are fresh
    per epoch and the boxes bound to the roster transcript, so none opens; the true message still combines."""
    old_clients, _, old_dealt = _dealt_epoch(tiny, "review2-replay", epoch=0)
    clients, confirmation, dealt = _dealt_epoch(tiny, "review2-replay", epoch=1)
    for c in clients:
        c.on_key_confirmation(confirmation)
    with pytest.raises(CryptoError):
        clients[0].on_dealt_shares(old_dealt[0])
    clients[0].on_dealt_shares(dealt[0])
    assert clients[0].threshold.ready and old_clients[0].threshold is not None


@pytest.mark.parametrize(("pin", "asked", "ok"), [("0.6", 0.6, True), ("0.60", 0.6, True), ("0.6", 0.6000001, False),
                                                  ("0.6", 3, False), ("3", 0.6, False), ("nan", 0.6, False),
                                                  (None, 0.6, False), ("", 0.6, False), ("0.8", 1.0, True)])
def test_the_threshold_pin_is_the_exact_value(pin, asked, ok):
    """The node compares the server's threshold with its operator's pin as a number: a count for a fraction, a
    nearby fraction, a missing or empty pin, NaN are refused; N-of-N is taken whatever the pin."""
    from bastionfl.client.secure import client_policy
    from bastionfl.config import RunConfig
    from bastionfl.protocol import ProtocolError

    cfg = RunConfig.build(num_clients=5, secure_aggregation="xmkckks", threshold=asked, auth="pseudonym",
                          threat_model="malicious-colluding")
    pins = {"threat-model": "malicious-colluding"} | ({} if pin is None else {"threshold": pin})
    if ok:
        assert client_policy(cfg, pins).threshold == (None if asked == 1.0 else ThresholdRule.parse(asked))
    else:
        with pytest.raises(ProtocolError):
            client_policy(cfg, pins)
