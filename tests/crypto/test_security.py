"""Trap tests: aggregated-key encryption, shares against the aggregate C1, smudging, C1 verification, replays."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import tenseal.sealapi as sa
from tenseal.sealapi import util

from bastionfl.crypto import (
    DecryptionRequest,
    EncryptedVector,
    StreamingAggregator,
    VerificationError,
    encrypt_vector,
    fuse,
)
from bastionfl.crypto.backend import backend, save
from bastionfl.crypto.decryption import share_plaintexts
from bastionfl.crypto.encryption import decode_plaintexts, load_ciphertexts
from bastionfl.crypto.noise import csprng_gaussian, smudging_plaintext

from .conftest import make_epoch, next_round, values


def _round(ep, xs):
    evs = [encrypt_vector(ep.apk, x) for x in xs]
    agg = StreamingAggregator(ep.params, ep.apk)
    for ev in evs:
        agg.add(ev)
    return evs, agg.result()


def _targets(params, cts):
    be = backend(params)
    return [be.c1_only(ct, be.eval_a) for ct in cts]


def _decode_c0_plus(params, cts, share_lists, length):
    be = backend(params)
    out = []
    for k, ct in enumerate(cts):
        acc = sa.Ciphertext()
        be.eval_a.add_plain(ct, share_lists[0][k], acc)
        for s in share_lists[1:]:
            be.eval_a.add_plain_inplace(acc, s[k])
        out.append(be.c0(acc))
    return decode_plaintexts(params, out, length)


def test_encryption_is_under_the_aggregated_key(tiny3):
    """Decrypting with the sum of secrets works; with any single secret it does not (trap T-a)."""
    p = tiny3.params
    x = values(np.random.default_rng(1), 1, 3000)[0]
    ev = encrypt_vector(tiny3.apk, x)
    targets = lambda: _targets(p, ev.ciphertexts)  # noqa: E731
    all_secrets = [share_plaintexts(k, targets(), 0.0) for k in tiny3.keys]  # Σ_i s_i·c1 = s~·c1
    # scale 2^30 and unseeded encryption noise: typically 3e-5..1.1e-4 (seen); 1e-3 keeps 7 orders below the 1e3 below
    assert np.max(np.abs(_decode_c0_plus(p, ev.ciphertexts, all_secrets, x.size) - x)) < 1e-3
    for single in all_secrets:
        assert np.max(np.abs(_decode_c0_plus(p, ev.ciphertexts, [single], x.size) - x)) > 1e3


def test_share_is_against_aggregate_not_own_ciphertext(tiny3):
    """The MK-CKKS leak is closed: c0_i + D_i does not decode m_i (trap T-b and T-a+T-b)."""
    p = tiny3.params
    xs = values(np.random.default_rng(2), 3, 3000)
    evs, aggregate = _round(tiny3, xs)
    req = aggregate.decryption_request(next_round())
    shares = [k.decryption_share(req, ev) for k, ev in zip(tiny3.keys, evs)]
    for i in range(3):
        leak = _decode_c0_plus(p, evs[i].ciphertexts, [shares[i].plaintexts], xs[i].size)
        assert np.max(np.abs(leak - xs[i])) > 1e3
    # contrast: had the client answered against its own c1 (what MK-CKKS does), the server would read m_i
    own = [share_plaintexts(tiny3.keys[0], _targets(p, evs[0].ciphertexts), p.smudging_std)]
    others = [share_plaintexts(k, _targets(p, evs[0].ciphertexts), 0.0) for k in tiny3.keys[1:]]
    assert np.max(np.abs(_decode_c0_plus(p, evs[0].ciphertexts, own + others, 3000) - xs[0])) < 0.05  # m_i readable
    assert np.max(np.abs(fuse(aggregate, shares, 3) - np.sum(xs, axis=0))) < p.expected_max_error(3)


def _first_prime_ntt(obj, n):
    return [int(obj[i]) for i in range(n)]


def test_unsmudged_share_reveals_the_secret(tiny3):
    """Without smudging, s_i = D_i · C1^{-1} (pointwise in NTT form); with smudging the recovery fails."""
    p = tiny3.params
    n = p.poly_modulus_degree
    q0 = p.primes[0]
    evs, aggregate = _round(tiny3, values(np.random.default_rng(3), 3, 100))
    target = _targets(p, aggregate.ciphertexts[:1])
    c1 = [int(target[0][n * len(p.data_bits) + i]) for i in range(n)]  # layout: poly, prime, coefficient
    key = tiny3.keys[0]
    secret_ntt = _first_prime_ntt(key._KeyShare__secret.data(), n)  # test-only peek at the secret
    bare = share_plaintexts(key, _targets(p, aggregate.ciphertexts[:1]), 0.0)[0]
    recovered = [d * pow(c, -1, q0) % q0 for d, c in zip(_first_prime_ntt(bare, n), c1) if c]
    assert recovered == [s for s, c in zip(secret_ntt, c1) if c]
    smudged = share_plaintexts(key, _targets(p, aggregate.ciphertexts[:1]), p.smudging_std)[0]
    guess = [d * pow(c, -1, q0) % q0 for d, c in zip(_first_prime_ntt(smudged, n), c1) if c]
    assert sum(g == s for g, s in zip(guess, secret_ntt)) < n // 100


def _coefficients(params, pt):
    """First-prime coefficients of an NTT plaintext, centred: inverse NTT (lazy, B8) then reduce."""
    n = params.poly_modulus_degree
    q0 = params.primes[0]
    coeffs = util.inverse_ntt_negacyclic_harvey([int(pt[i]) for i in range(n)], util.NTTTables(int(math.log2(n)), sa.Modulus(q0)))
    arr = np.array([c % q0 for c in coeffs], dtype=object)
    return np.array([int(c) - q0 if c > q0 // 2 else int(c) for c in arr], dtype=np.float64)


@pytest.mark.parametrize("profile", ["precise", "lean"])
def test_smudging_std_within_two_percent(profile, request):
    p = request.getfixturevalue(profile)
    be = backend(p)
    pt = smudging_plaintext(be.encoder_b, p.poly_modulus_degree, be.data_parms_id, p.scale, p.smudging_std)
    coeffs = _coefficients(p, pt)
    assert abs(np.std(coeffs) / p.smudging_std - 1.0) < 0.02
    assert abs(np.mean(coeffs)) < 5 * p.smudging_std / math.sqrt(coeffs.size)
    assert pt.scale == p.scale


def test_two_shares_of_same_target_differ(tiny3):
    p = tiny3.params
    _, aggregate = _round(tiny3, values(np.random.default_rng(4), 3, 100))
    a = share_plaintexts(tiny3.keys[0], _targets(p, aggregate.ciphertexts), p.smudging_std)[0]
    b = share_plaintexts(tiny3.keys[0], _targets(p, aggregate.ciphertexts), p.smudging_std)[0]
    assert save(a) != save(b)


def test_csprng_gaussian_statistics_and_source(monkeypatch):
    z = csprng_gaussian(200_001, 3.0)
    assert z.shape == (200_001,)
    assert abs(np.std(z) / 3.0 - 1) < 0.01 and abs(np.mean(z)) < 0.03
    assert abs(np.mean(np.abs(z) < 3.0) - 0.6827) < 0.005  # Gaussian shape, not just its variance
    calls = []
    real = os.urandom
    monkeypatch.setattr(os, "urandom", lambda k: calls.append(k) or real(k))
    csprng_gaussian(10, 1.0)
    assert calls == [80]  # the sampler draws its uniforms from os.urandom
    monkeypatch.setattr(os, "urandom", lambda k: b"\x42" * k)
    assert np.array_equal(csprng_gaussian(4, 1.0), csprng_gaussian(4, 1.0))


# ---- C1 verification (malicious server) ----

@pytest.fixture()
def fresh(tiny3):
    xs = values(np.random.default_rng(5), 3, 2000)
    evs, aggregate = _round(tiny3, xs)
    return tiny3, evs, aggregate


def _forge(req, c1=None, components=None):
    return DecryptionRequest(
        req.params, req.epoch_id, req.round_number, req.length,
        list(c1 if c1 is not None else req.c1), list(components if components is not None else req.components),
    )


def test_forged_constant_c1_refused(fresh):
    ep, evs, aggregate = fresh
    p = ep.params
    be = backend(p)
    req = aggregate.decryption_request(next_round())
    # a "constant" C1: (0, c) with c the constant polynomial 2^25, built as (0, 1)·c from the encoder
    const = sa.Plaintext()
    be.encoder_a.encode(float(2**25), be.data_parms_id, 1.0, const)
    one = _targets(p, aggregate.ciphertexts[:1])[0]
    forged = sa.Ciphertext()
    be.eval_a.multiply_plain(one, const, forged)
    with pytest.raises(VerificationError, match="not the sum"):
        ep.keys[0].decryption_share(_forge(req, c1=[save(forged)] + req.c1[1:]), evs[0])


def test_c1_of_one_client_refused(fresh):
    """The MK-CKKS attack: ask for a share against one client's own c1."""
    ep, evs, aggregate = fresh
    req = aggregate.decryption_request(next_round())
    with pytest.raises(VerificationError, match="not the sum"):
        ep.keys[0].decryption_share(_forge(req, c1=evs[1].c1_blobs()), evs[0])


def test_c1_missing_one_component_refused(fresh):
    ep, evs, aggregate = fresh
    req = aggregate.decryption_request(next_round())
    with pytest.raises(VerificationError, match="3 participants"):
        ep.keys[0].decryption_share(_forge(req, components=req.components[:2]), evs[0])
    # the list is complete but C1 lacks a term: the sum of only two components
    be = backend(ep.params)
    partial = []
    for k in range(len(req.c1)):
        acc = sa.Ciphertext()
        be.eval_a.add(evs[0].ciphertexts[k], evs[1].ciphertexts[k], acc)
        partial.append(save(be.c1_only(acc, be.eval_a)))
    with pytest.raises(VerificationError, match="not the sum"):
        ep.keys[0].decryption_share(_forge(req, c1=partial), evs[0])


def test_extra_term_refused(fresh):
    ep, evs, aggregate = fresh
    req = aggregate.decryption_request(next_round())
    extra = encrypt_vector(ep.apk, np.zeros(2000))
    with pytest.raises(VerificationError, match="3 participants"):
        ep.keys[0].decryption_share(_forge(req, components=req.components + [extra.c1_blobs()]), evs[0])
    be = backend(ep.params)
    bigger = []
    for k, blob in enumerate(req.c1):
        (c1,) = load_ciphertexts(ep.params, [blob], "test")
        be.eval_a.add_inplace(c1, _targets(ep.params, [extra.ciphertexts[k]])[0])
        bigger.append(save(c1))
    with pytest.raises(VerificationError, match="not the sum"):
        ep.keys[0].decryption_share(_forge(req, c1=bigger), evs[0])


def test_own_c1_must_be_listed_and_unique(fresh):
    ep, evs, aggregate = fresh
    req = aggregate.decryption_request(next_round())
    other = encrypt_vector(ep.apk, np.zeros(2000)).c1_blobs()
    with pytest.raises(VerificationError, match="own c1"):
        ep.keys[0].decryption_share(_forge(req, components=[other] + req.components[1:]), evs[0])
    with pytest.raises(VerificationError, match="twice"):
        ep.keys[0].decryption_share(_forge(req, components=[req.components[0]] * 3), evs[0])


def test_repeated_and_conflicting_requests_refused(fresh):
    ep, evs, aggregate = fresh
    req = aggregate.decryption_request(next_round())
    share = ep.keys[0].decryption_share(req, evs[0])
    assert share.round_number == req.round_number
    with pytest.raises(VerificationError, match="already"):
        ep.keys[0].decryption_share(req, evs[0])  # same request again
    with pytest.raises(VerificationError, match="ciphertext set"):
        ep.keys[0].decryption_share(aggregate.decryption_request(next_round()), evs[0])  # same set, new round
    other_evs, other_agg = _round(ep, values(np.random.default_rng(9), 3, 2000))
    conflicting = other_agg.decryption_request(req.round_number)  # different C1, same round
    with pytest.raises(VerificationError, match="round"):
        ep.keys[0].decryption_share(conflicting, other_evs[0])


def test_valid_request_after_refusals_still_decrypts(fresh):
    ep, evs, aggregate = fresh
    req = aggregate.decryption_request(next_round())
    with pytest.raises(VerificationError):
        ep.keys[1].decryption_share(_forge(req, c1=evs[1].c1_blobs()), evs[1])
    shares = [k.decryption_share(req, ev) for k, ev in zip(ep.keys, evs)]
    assert fuse(aggregate, shares, 3).shape == (2000,)


def test_crs_is_deterministic_and_seed_dependent(tiny):
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
    from .conftest import make_epoch

    ep = make_epoch(tiny, 2, run_id="prepared")
    xs = values(np.random.default_rng(11), 2, 5000)  # two ciphertexts per client
    evs, aggregate = _round(ep, xs)
    for k in ep.keys:
        k.prepare_smudging(len(aggregate.ciphertexts) + 1)
    req = aggregate.decryption_request(next_round())
    shares = [k.decryption_share(req, ev) for k, ev in zip(ep.keys, evs)]
    assert all(len(k._prepared) == 1 for k in ep.keys)  # each prepared flood is consumed, never reused
    assert np.max(np.abs(fuse(aggregate, shares, 2) - np.sum(xs, axis=0))) <= tiny.expected_max_error(2)
    p = tiny
    a = share_plaintexts(ep.keys[0], _targets(p, aggregate.ciphertexts[:1]), p.smudging_std)[0]
    b = share_plaintexts(ep.keys[0], _targets(p, aggregate.ciphertexts[:1]), p.smudging_std)[0]
    assert save(a) != save(b)


def test_local_export_keeps_secret_binding_and_replay_record(tiny):
    """export_local/import_local (client-side storage between processes): same key, same epoch, same refusals."""
    from bastionfl.crypto import CryptoFormatError, KeyShare

    from .conftest import make_epoch

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
