"""Attacks on t-of-n decryption by a server that asks one member for shares on several attempts of one round, each
under another decrypting set (hence another Lagrange coefficient). Through the public message types and bytes."""

from __future__ import annotations

import numpy as np
import pytest

from bastionfl.crypto import RoundShare, VerificationError, scheme
from bastionfl.crypto import sealraw
from bastionfl.crypto.backend import backend
from bastionfl.crypto.flood import to_ntt
from bastionfl.crypto.polyarith import sub_mod
from bastionfl.crypto.shamir import lagrange_at_zero
from bastionfl.crypto.threshold import ThresholdRule, attempt_aggregate

from .lattice import NearestPlane, lll
from .threshold_engine import signed_round, threshold_epoch

N_MEMBERS = 20
RULE = ThresholdRule.parse(0.6)  # t = 12: c_max = min(11, 3) = 3; the server below needs no colluder
ATTEMPTS = 6  # one member's shares on six attempts of one round, six decrypting sets


def _crt(rows: list[list[int]], primes: tuple[int, ...]) -> tuple[list[int], int]:
    """Per coefficient, the integer mod Q from its residues mod each prime."""
    q_all = 1
    for q in primes:
        q_all *= q
    out = [0] * len(rows[0])
    for row, q in zip(rows, primes):
        m = q_all // q
        f = m * pow(m, -1, q)
        out = [(o + int(v) * f) % q_all for o, v in zip(out, row)]
    return out, q_all


def _from_ntt(params, x: np.ndarray) -> np.ndarray:
    """Coefficient form of one NTT-form polynomial (L, N), through SEAL's inverse transform."""
    be = backend(params)
    ct = sealraw.to_ciphertext(be.ctx_a, be.data_parms_id, np.stack([x, x]), params.data_primes, 1.0)
    be.eval_a.transform_from_ntt_inplace(ct)
    return sealraw.ciphertext_data(ct)[0]


def _scalar_ratio(x: np.ndarray, y: np.ndarray, primes) -> list[int] | None:
    """The scalars r (one per prime) with x = r * y slot-wise, or None when x is no scalar multiple of y."""
    out = []
    for row_x, row_y, q in zip(x, y, primes):
        ratios = {int(a) * pow(int(b), -1, q) % q for a, b in zip(row_x[:64], row_y[:64]) if int(b)}
        if len(ratios) != 1:
            return None
        out.append(ratios.pop())
    return out


def _attack(params, shares, sets, c1_by_attempt, victim):
    """Recover the victim's threshold key share from its shares D_a = l_a k (C1 + R_a) + E_a, given that every
    re-randomiser R_a is a known scalar multiple r_a of R_1: per coefficient, D = l X + (l r) Y + E mod Q with
    X = k C1 and Y = k R_1, a lattice of dimension ATTEMPTS and determinant Q^(ATTEMPTS-2) in which the flood E is
    the unique short offset (Babai's nearest plane on an LLL-reduced basis). None when the premise does not hold."""
    primes = params.data_primes
    base = c1_by_attempt[0][0]
    rs = [[0] * len(primes)]
    for c1 in c1_by_attempt[1:]:
        r = _scalar_ratio(sub_mod(c1[0], base, primes), sub_mod(c1_by_attempt[1][0], base, primes), primes)
        if r is None:
            return None
        rs.append(r)
    lam = [_crt([[v] for v in lagrange_at_zero(s, primes)[victim]], primes)[0][0] for s in sets]
    r_big = [_crt([[v] for v in r], primes)[0][0] for r in rs]
    q_all = _crt([[0]] * len(primes), primes)[1]
    w = [la * r % q_all for la, r in zip(lam, r_big)]
    m = len(shares)
    b1 = [x * pow(lam[0], -1, q_all) % q_all for x in lam]
    b2 = [x * pow(w[1], -1, q_all) % q_all for x in w]
    basis = [b1, b2] + [[q_all if j == i else 0 for j in range(m)] for i in range(2, m)]
    decoder = NearestPlane(lll(basis))
    coeffs = [_crt(_from_ntt(params, d[0]).tolist(), primes)[0] for d in shares]
    e0 = []
    for col in zip(*coeffs):
        target = [v - q_all if v > q_all // 2 else v for v in col]
        e0.append(target[0] - decoder.closest(target)[0])
    flood = np.array([[e % q for e in e0] for q in primes], dtype=np.uint64)
    scaled = sub_mod(shares[0][0], to_ntt(params, flood[None])[0], primes)  # l_0 k C1, exactly
    key = np.empty_like(scaled)
    for j, q in enumerate(primes):
        lam_q = lagrange_at_zero(sets[0], primes)[victim][j]
        key[j] = [int(s) * pow(lam_q * int(c) % q, -1, q) % q for s, c in zip(scaled[j], base[j])]
    return key


@pytest.mark.parametrize("threat", ["malicious", "malicious-colluding"])
def test_shares_on_several_attempts_do_not_reveal_a_threshold_key_share(tiny, threat):
    """A server (no colluder) asks member 0 for its share on attempts 0..5 of one round, each with another
    decrypting set of 12 signers. With a scalar re-randomiser (C1 + v_a a) the six shares are, per coefficient, six
    noisy combinations of two unknowns with known full-size weights: LLL + Babai recover the flood exactly and with it
    the member's threshold key share (12 such members give the epoch's secret). The re-randomiser must not let one
    coefficient be solved on its own."""
    fed = threshold_epoch(tiny, threat, N_MEMBERS, RULE, run_id=f"review-attempts-{threat}")
    rng = np.random.default_rng(7)
    srv = signed_round(fed, 1, [rng.uniform(-1, 1, 50) for _ in range(N_MEMBERS)])
    victim = 0
    t = fed.server.threshold
    sets, shares = [], []
    for attempt in range(ATTEMPTS):
        others = sorted(rng.choice(np.arange(1, N_MEMBERS), size=t - 1, replace=False).tolist())
        sets.append(tuple([victim, *others]))
        conf = srv.confirmation(attempt, sets[-1])
        shares.append(RoundShare.from_bytes(tiny, fed.clients[victim].on_round_confirmation(conf)).data)
    a = scheme.crs_polynomial(tiny, fed.server.crs)[: len(tiny.data_primes)]
    c1 = np.ascontiguousarray(srv._sum[:, 1])
    c1_by_attempt = [attempt_aggregate(tiny, c1, a, srv.transcript, attempt) for attempt in range(ATTEMPTS)]
    key = _attack(tiny, shares, sets, c1_by_attempt, victim)
    assert key is None or not np.array_equal(key, fed.clients[victim].threshold._share)


def test_a_member_answers_at_most_n_minus_t_plus_one_attempts(tiny):
    """Each failed attempt loses a member of S, so an honest server never goes past attempt n - t: a member refuses
    attempt n - t + 1 (fewer related shares for any attack on the re-randomisation)."""
    n, rule = 7, ThresholdRule.parse(0.6)  # t = 5: attempts 0..2
    fed = threshold_epoch(tiny, "malicious", n, rule, run_id="review-attempt-cap")
    srv = signed_round(fed, 1, [np.full(10, 0.1) for _ in range(n)])
    t = fed.server.threshold
    conf = srv.confirmation(n - t + 1, tuple(range(t)))
    with pytest.raises(VerificationError, match="at most 3 attempts"):
        fed.clients[0].on_round_confirmation(conf)
    conf = srv.confirmation(n - t, tuple(range(t)))
    assert RoundShare.from_bytes(tiny, fed.clients[0].on_round_confirmation(conf)).member == 0


def test_odd_attempts_and_decrypting_sets_are_refused_without_spending_anything(tiny):
    """Well-formed bytes, odd content: an attempt number beyond the range, decrypting sets with a duplicate, out of
    order, too small, out of the epoch, without this member. Each is a typed refusal, and none of them spends the
    member's one share of the attempt: the honest confirmation still gets it."""
    import dataclasses

    from bastionfl.crypto import CryptoError, RoundConfirmation

    n, rule = 7, ThresholdRule.parse(0.6)  # t = 5
    fed = threshold_epoch(tiny, "malicious", n, rule, run_id="review-odd-sets")
    srv = signed_round(fed, 1, [np.full(10, 0.2) for _ in range(n)])
    honest = RoundConfirmation.from_bytes(tiny, srv.confirmation(0, (0, 1, 2, 3, 4)))
    for attempt, s in ((2**32 - 1, (0, 1, 2, 3, 4)), (0, (0, 1, 1, 2, 3)), (0, (0, 2, 1, 3, 4)), (0, (0, 1, 2, 3)),
                       (0, (0, 1, 2, 3, 7)), (0, (1, 2, 3, 4, 5)), (4096, (0, 1, 2, 3, 4))):
        odd = dataclasses.replace(honest, attempt=attempt, decrypting=s).to_bytes(tiny)
        with pytest.raises(CryptoError):
            fed.clients[0].on_round_confirmation(odd)
    share = RoundShare.from_bytes(tiny, fed.clients[0].on_round_confirmation(honest.to_bytes(tiny)))
    srv.add_share(share.to_bytes(tiny))
    with pytest.raises(CryptoError):  # ... and only once
        fed.clients[0].on_round_confirmation(honest.to_bytes(tiny))
