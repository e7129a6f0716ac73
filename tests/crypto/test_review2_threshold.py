"""Second review of t-of-n decryption: a malicious server, alone or with up to ``c_max`` colluding members, against
the attempt re-randomisation, the decrypting set and the new message fields. Through the public message types and
their bytes; a test that passes documents a property that held."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bastionfl.crypto import CryptoError, RoundConfirmation, RoundShare, scheme
from bastionfl.crypto.commitment import component_digests
from bastionfl.crypto.round_messages import commitment_to_bytes
from bastionfl.crypto.shamir import lagrange_at_zero
from bastionfl.crypto.smudging import FLOOD_TERMS
from bastionfl.crypto.threshold import ThresholdRule, attempt_mask, c_max

from .test_review_threshold import _from_ntt
from .threshold_engine import signed_round, threshold_epoch

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
