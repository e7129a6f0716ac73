"""Trap tests: aggregated-key encryption, shares against the aggregate C1, smudging, C1 verification, replays."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from bastionfl.crypto import (
    DecryptionRequest,
    EncryptedVector,
    ReplayError,
    StreamingAggregator,
    VerificationError,
    encrypt_vector,
    fuse,
)
from bastionfl.crypto import flood as flood_module
from bastionfl.crypto.decryption import fuse_unchecked
from bastionfl.crypto.polyarith import add_mod, sum_mod
from bastionfl.crypto.scheme import partial_decrypt, secret_data

from .conftest import make_epoch, next_round, values


def _round(ep, xs):
    evs = [encrypt_vector(ep.apk, x) for x in xs]
    agg = StreamingAggregator(ep.params, ep.apk)
    for ev in evs:
        agg.add(ev)
    return evs, agg.result()


def _share(key, c1, smudged=True):
    """s_i c1 (+ a flood sized for the epoch) for any c1: the raw operation behind decryption_share."""
    if smudged:
        return key.partial_decrypt(c1, key.participants, key.participants)
    return partial_decrypt(key.params, key._decryptor, c1, None)


def _decode_c0_plus(params, data, shares, length):
    return fuse_unchecked(params, data[:, 0], shares, length)


def test_encryption_is_under_the_aggregated_key(tiny3):
    """Decrypting with the sum of secrets works; with any single secret it does not (trap T-a)."""
    p = tiny3.params
    x = values(np.random.default_rng(1), 1, 3000)[0]
    ev = encrypt_vector(tiny3.apk, x)
    all_secrets = [_share(k, ev.c1(), smudged=False) for k in tiny3.keys]  # Σ_i s_i·c1 = s~·c1
    # scale 2^30 and unseeded encryption noise: typically 3e-5..1.1e-4 (seen); 1e-3 keeps 7 orders below the 1e3 below
    assert np.max(np.abs(_decode_c0_plus(p, ev.data, all_secrets, x.size) - x)) < 1e-3
    for single in all_secrets:
        assert np.max(np.abs(_decode_c0_plus(p, ev.data, [single], x.size) - x)) > 1e3


def test_share_is_against_aggregate_not_own_ciphertext(tiny3):
    """The MK-CKKS leak is closed: c0_i + D_i does not decode m_i (trap T-b and T-a+T-b)."""
    p = tiny3.params
    xs = values(np.random.default_rng(2), 3, 3000)
    evs, aggregate = _round(tiny3, xs)
    req = aggregate.decryption_request(next_round())
    shares = [k.decryption_share(req, ev) for k, ev in zip(tiny3.keys, evs)]
    for i in range(3):
        leak = _decode_c0_plus(p, evs[i].data, [shares[i].data], xs[i].size)
        assert np.max(np.abs(leak - xs[i])) > 1e3
    # contrast: had the client answered against its own c1 (what MK-CKKS does), the server would read m_i
    own = [_share(tiny3.keys[0], evs[0].c1())]
    others = [_share(k, evs[0].c1(), smudged=False) for k in tiny3.keys[1:]]
    assert np.max(np.abs(_decode_c0_plus(p, evs[0].data, own + others, 3000) - xs[0])) < 0.05  # m_i readable
    assert np.max(np.abs(fuse(aggregate, shares, 3) - np.sum(xs, axis=0))) < p.expected_max_error(3)


def test_unsmudged_share_reveals_the_secret(tiny3):
    """Without smudging, s_i = D_i · C1^{-1} (pointwise in NTT form); with smudging the recovery fails."""
    p = tiny3.params
    q0 = p.primes[0]
    evs, aggregate = _round(tiny3, values(np.random.default_rng(3), 3, 100))
    c1 = aggregate.data[:1, 1]
    key = tiny3.keys[0]
    secret_ntt = secret_data(p, key._KeyShare__secret)[0].tolist()  # test-only peek at the secret (first prime)
    bare = _share(key, c1, smudged=False)[0, 0]
    recovered = [int(d) * pow(int(c), -1, q0) % q0 for d, c in zip(bare, c1[0, 0]) if c]
    assert recovered == [s for s, c in zip(secret_ntt, c1[0, 0]) if c]
    smudged = _share(key, c1)[0, 0]
    guess = [int(d) * pow(int(c), -1, q0) % q0 for d, c in zip(smudged, c1[0, 0]) if c]
    assert sum(g == s for g, s in zip(guess, secret_ntt)) < p.poly_modulus_degree // 100


def _crt_centred(params, residues):
    """Integers mod Q (all data primes) from their residues, centred: the flood as the decoder sees it."""
    primes = params.data_primes
    total = 1
    for q in primes:
        total *= q
    out = []
    for column in zip(*[residues[j].tolist() for j in range(len(primes))]):
        x = 0
        for q, r in zip(primes, column):
            m = total // q
            x += r * m * pow(m, -1, q)
        x %= total
        out.append(x - total if x > total // 2 else x)
    return np.array(out, dtype=np.float64)


@pytest.mark.parametrize("profile", ["precise", "lean"])
def test_flood_is_exact_integers_of_the_stated_std(profile, request):
    p = request.getfixturevalue(profile)
    bits = p.flood_bits(3, 3, 62)
    coeffs = flood_module.flood_coefficients(p, bits, 2)
    x = _crt_centred(p, coeffs[0]).tolist() + _crt_centred(p, coeffs[1]).tolist()
    std = float(np.std(x))
    expected = 2.0**bits * math.sqrt(4 / 3)
    assert abs(std / expected - 1.0) < 0.02
    assert max(abs(v) for v in x) < 4 * 2.0**bits
    assert abs(np.mean(x)) < 5 * expected / math.sqrt(len(x))
    ntt = flood_module.to_ntt(p, coeffs)
    assert ntt.shape == coeffs.shape and not np.array_equal(ntt, coeffs)


def test_flood_source_is_os_urandom(monkeypatch, tiny):
    calls = []
    real = os.urandom
    monkeypatch.setattr(os, "urandom", lambda k: calls.append(k) or real(k))
    flood_module.flood_coefficients(tiny, 16, 1)
    assert calls == [8 * tiny.poly_modulus_degree] * 4  # four uniform terms per coefficient, from os.urandom
    monkeypatch.setattr(os, "urandom", lambda k: b"\x42" * k)
    assert np.array_equal(flood_module.flood_coefficients(tiny, 16, 1), flood_module.flood_coefficients(tiny, 16, 1))


def test_two_shares_of_same_target_differ(tiny3):
    _, aggregate = _round(tiny3, values(np.random.default_rng(4), 3, 100))
    a = _share(tiny3.keys[0], aggregate.data[:, 1])
    b = _share(tiny3.keys[0], aggregate.data[:, 1])
    assert not np.array_equal(a, b)


# ---- C1 verification (malicious server) ----

@pytest.fixture()
def fresh(tiny3):
    xs = values(np.random.default_rng(5), 3, 2000)
    evs, aggregate = _round(tiny3, xs)
    return tiny3, evs, aggregate


def _forge(req, c1=None, components=None):
    return DecryptionRequest(
        req.params, req.epoch_id, req.round_number, req.length,
        req.c1 if c1 is None else c1, list(components if components is not None else req.components),
    )


def test_forged_constant_c1_refused(fresh):
    ep, evs, aggregate = fresh
    req = aggregate.decryption_request(next_round())
    # a constant polynomial 2^25 has the constant NTT vector 2^25: the key-recovery request of the review
    forged = np.full_like(req.c1, 2**25)
    with pytest.raises(VerificationError, match="not the sum"):
        ep.keys[0].decryption_share(_forge(req, c1=forged), evs[0])


def test_c1_of_one_client_refused(fresh):
    """The MK-CKKS attack: ask for a share against one client's own c1."""
    ep, evs, aggregate = fresh
    req = aggregate.decryption_request(next_round())
    with pytest.raises(VerificationError, match="not the sum"):
        ep.keys[0].decryption_share(_forge(req, c1=evs[1].c1()), evs[0])


def test_c1_missing_one_component_refused(fresh):
    ep, evs, aggregate = fresh
    p = ep.params
    req = aggregate.decryption_request(next_round())
    with pytest.raises(VerificationError, match="3 participants"):
        ep.keys[0].decryption_share(_forge(req, components=req.components[:2]), evs[0])
    # the list is complete but C1 lacks a term: the sum of only two components
    partial = add_mod(evs[0].c1(), evs[1].c1(), p.data_primes)
    with pytest.raises(VerificationError, match="not the sum"):
        ep.keys[0].decryption_share(_forge(req, c1=partial), evs[0])


def test_extra_term_refused(fresh):
    ep, evs, aggregate = fresh
    p = ep.params
    req = aggregate.decryption_request(next_round())
    extra = encrypt_vector(ep.apk, np.zeros(2000))
    with pytest.raises(VerificationError, match="3 participants"):
        ep.keys[0].decryption_share(_forge(req, components=req.components + [extra.c1()]), evs[0])
    bigger = add_mod(req.c1, extra.c1(), p.data_primes)
    with pytest.raises(VerificationError, match="not the sum"):
        ep.keys[0].decryption_share(_forge(req, c1=bigger), evs[0])


def test_own_c1_must_be_listed_and_unique(fresh):
    ep, evs, aggregate = fresh
    req = aggregate.decryption_request(next_round())
    other = encrypt_vector(ep.apk, np.zeros(2000)).c1()
    with pytest.raises(VerificationError, match="own c1"):
        ep.keys[0].decryption_share(_forge(req, components=[other] + req.components[1:]), evs[0])
    with pytest.raises(VerificationError, match="twice"):
        ep.keys[0].decryption_share(_forge(req, components=[req.components[0]] * 3), evs[0])


def test_repeated_and_conflicting_requests_refused(fresh):
    ep, evs, aggregate = fresh
    p = ep.params
    req = aggregate.decryption_request(next_round())
    share = ep.keys[0].decryption_share(req, evs[0])
    assert share.round_number == req.round_number
    with pytest.raises(ReplayError, match="already"):
        ep.keys[0].decryption_share(req, evs[0])  # same request again
    with pytest.raises(ReplayError, match="ciphertext set"):
        ep.keys[0].decryption_share(aggregate.decryption_request(next_round()), evs[0])  # same set, new round
    # the review's variant: the same C1 under a re-randomised list (entries shifted by r and -r), new round
    r = encrypt_vector(ep.apk, np.zeros(2000)).c1()
    rerandomised = [add_mod(req.components[0], r, p.data_primes),
                    add_mod(req.components[1], _neg(r, p), p.data_primes),
                    req.components[2]]
    assert np.array_equal(sum_mod(rerandomised, p.data_primes), req.c1)
    moved = DecryptionRequest(p, req.epoch_id, next_round(), req.length, req.c1, rerandomised)
    with pytest.raises(VerificationError):
        ep.keys[1].decryption_share(moved, evs[1])  # own entry altered: refused before the replay record matters
    ep.keys[2].decryption_share(req, evs[2])
    with pytest.raises(ReplayError, match="aggregate"):
        ep.keys[2].decryption_share(moved, evs[2])  # own entry intact, same C1 in a new round: refused
    other_evs, other_agg = _round(ep, values(np.random.default_rng(9), 3, 2000))
    conflicting = other_agg.decryption_request(req.round_number)  # different C1, same round
    with pytest.raises(ReplayError, match="round"):
        ep.keys[0].decryption_share(conflicting, other_evs[0])


def _neg(a, p):
    from bastionfl.crypto.polyarith import neg_mod

    return neg_mod(a, p.data_primes)


def test_valid_request_after_refusals_still_decrypts(fresh):
    ep, evs, aggregate = fresh
    req = aggregate.decryption_request(next_round())
    with pytest.raises(VerificationError):
        ep.keys[1].decryption_share(_forge(req, c1=evs[1].c1()), evs[1])
    shares = [k.decryption_share(req, ev) for k, ev in zip(ep.keys, evs)]
    assert fuse(aggregate, shares, 3).shape == (2000,)


def test_crs_is_deterministic_and_seed_dependent(tiny):
    from bastionfl.crypto.backend import save
    from bastionfl.crypto.crs import CrsSeed, crs_material

    a1 = save(crs_material(tiny, CrsSeed.from_session("r", 1)).a0)
    crs_material.cache_clear()
    a1_again = save(crs_material(tiny, CrsSeed.from_session("r", 1)).a0)
    a2 = save(crs_material(tiny, CrsSeed.from_session("r", 2)).a0)
    a3 = save(crs_material(tiny, CrsSeed.from_session("s", 1)).a0)
    assert a1 == a1_again
    assert len({a1, a2, a3}) == 3


def test_client_key_shares_are_not_seeded(tiny):
    from bastionfl.crypto import CrsSeed, KeyShare

    crs = CrsSeed.from_session("same", 0)
    a, b = KeyShare.generate(tiny, crs), KeyShare.generate(tiny, crs)
    assert a.public_share().digest != b.public_share().digest
    assert "SecretKey" not in repr(a) and "sealapi" not in repr(a)
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(a)


def test_encrypted_vector_has_fresh_randomness(tiny3):
    x = np.ones(100)
    assert encrypt_vector(tiny3.apk, x).c1_digest() != encrypt_vector(tiny3.apk, x).c1_digest()
    ev = encrypt_vector(tiny3.apk, x)
    assert EncryptedVector.from_bytes(tiny3.params, ev.to_bytes()).c1_digest() == ev.c1_digest()


def test_prepared_smudging_is_used_once_and_gives_correct_shares(tiny):

    ep = make_epoch(tiny, 2, run_id="prepared")
    xs = values(np.random.default_rng(11), 2, 5000)  # two ciphertexts per client
    evs, aggregate = _round(ep, xs)
    for k in ep.keys:
        k.prepare_smudging(len(aggregate.data))
        k.prepare_smudging(len(aggregate.data))
    first, second = (f.copy() for _, f in ep.keys[0]._prepared)
    req = aggregate.decryption_request(next_round())
    shares = [k.decryption_share(req, ev) for k, ev in zip(ep.keys, evs)]
    assert all(len(k._prepared) == 1 for k in ep.keys)  # each prepared flood is consumed, never reused
    (_, left), = ep.keys[0]._prepared
    assert np.array_equal(left, second) and not np.array_equal(left, first)
    assert np.max(np.abs(fuse(aggregate, shares, 2) - np.sum(xs, axis=0))) <= tiny.expected_max_error(2, 1.0, 2)
    assert not np.array_equal(_share(ep.keys[0], aggregate.data[:1, 1]), _share(ep.keys[0], aggregate.data[:1, 1]))


def test_local_export_keeps_secret_binding_and_replay_record(tiny):
    """export_local/import_local (client-side storage between processes): same key, same epoch, same refusals."""
    from bastionfl.crypto import CryptoFormatError, KeyShare


    ep = make_epoch(tiny, 2, run_id="export")
    xs = values(np.random.default_rng(12), 2, 300)
    evs, aggregate = _round(ep, xs)
    req = aggregate.decryption_request(next_round())
    restored = KeyShare.import_local(tiny, ep.keys[0].export_local())
    assert restored.public_share().digest == ep.keys[0].public_share().digest
    assert restored.epoch_id == ep.keys[0].epoch_id and restored.participants == 2
    shares = [restored.decryption_share(req, evs[0].c1_digest()), ep.keys[1].decryption_share(req, evs[1])]
    assert np.max(np.abs(fuse(aggregate, shares, 2) - np.sum(xs, axis=0))) <= tiny.expected_max_error(2)
    again = KeyShare.import_local(tiny, restored.export_local())
    with pytest.raises(VerificationError, match="already"):
        again.decryption_share(req, evs[0])  # the replay record survives the round trip
    blob = restored.export_local()
    for bad in (blob[:-1], blob[:40], blob + b"\x00"):
        with pytest.raises(CryptoFormatError):
            KeyShare.import_local(tiny, bad)
    assert "SecretKey" not in repr(again) and "sealapi" not in repr(again)
    fresh = KeyShare.generate(tiny, ep.crs)  # before accept(): no epoch binding yet
    assert KeyShare.import_local(tiny, fresh.export_local()).epoch_id is None
