"""End-to-end rounds: correctness of the decoded sum, weighted mean, missing shares, streaming and epochs."""

from __future__ import annotations

import time

import numpy as np
import pytest

from bastionfl.crypto import (
    CryptoError,
    DecryptionRequest,
    DecryptionShare,
    EncryptedVector,
    EpochError,
    IncompleteShareSetError,
    ParameterError,
    StreamingAggregator,
    encrypt_vector,
    fuse,
    weighted_mean,
)
from bastionfl.crypto.decryption import fuse_unchecked

from .conftest import Epoch, make_epoch, next_round, values


def run_round(ep: Epoch, xs: list[np.ndarray], wire: bool = True):
    """One full round; with ``wire`` every object crosses to_bytes/from_bytes as it would over the network."""
    p = ep.params
    evs = [encrypt_vector(ep.apk, x) for x in xs]
    agg = StreamingAggregator(p, ep.apk)
    for ev in evs:
        agg.add(EncryptedVector.from_bytes(p, ev.to_bytes()) if wire else ev)
    aggregate = agg.result()
    request = aggregate.decryption_request(next_round())
    shares = []
    for k, ev in zip(ep.keys, evs):
        req = DecryptionRequest.from_bytes(p, request.to_bytes()) if wire else request
        s = k.decryption_share(req, ev)
        shares.append(DecryptionShare.from_bytes(p, s.to_bytes()) if wire else s)
    return aggregate, shares, evs


@pytest.mark.parametrize("n,size", [(3, 40_000), (10, 20_000)])
def test_sum_precise_small(precise, n, size):
    ep = make_epoch(precise, n, run_id=f"small-{n}")
    xs = values(np.random.default_rng(n), n, size)
    aggregate, shares, _ = run_round(ep, xs)
    err = np.max(np.abs(fuse(aggregate, shares, n) - np.sum(xs, axis=0)))
    assert err <= 1e-6
    assert err <= precise.expected_max_error(n, 1.0, len(aggregate.data))


@pytest.mark.parametrize("n,size", [(3, 40_000), (10, 20_000)])
def test_sum_lean_small(lean, n, size):
    ep = make_epoch(lean, n, run_id=f"lean-{n}")
    xs = values(np.random.default_rng(n + 100), n, size)
    aggregate, shares, _ = run_round(ep, xs)
    err = np.max(np.abs(fuse(aggregate, shares, n) - np.sum(xs, axis=0)))
    assert err <= lean.expected_max_error(n, 1.0, len(aggregate.data))  # documented: ≈1e-6 for n=3, ≈2e-6 for n=10
    assert err > 1e-9  # the lean flood is really there (2^20 against a 2^50 scale)


def test_sum_precise_1m_three_clients(precise3):
    start = time.perf_counter()
    xs = values(np.random.default_rng(7), 3, 1_000_000)
    aggregate, shares, _ = run_round(precise3, xs, wire=False)
    err = np.max(np.abs(fuse(aggregate, shares, 3) - np.sum(xs, axis=0)))
    assert err <= 1e-6
    assert time.perf_counter() - start < 60


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["precise", "lean"])
def test_sum_1m_ten_clients(profile, request):
    params = request.getfixturevalue(profile)
    ep = make_epoch(params, 10, run_id=f"slow-{profile}")
    xs = values(np.random.default_rng(10), 10, 1_000_000)
    aggregate, shares, _ = run_round(ep, xs, wire=False)
    err = np.max(np.abs(fuse(aggregate, shares, 10) - np.sum(xs, axis=0)))
    assert err <= (1e-6 if profile == "precise" else params.expected_max_error(10, 1.0))


def test_weighted_mean(precise3):
    rng = np.random.default_rng(3)
    xs = values(rng, 3, 5000)
    counts = [10, 25, 65]
    aggregate, shares, _ = run_round(precise3, [c * x for c, x in zip(counts, xs)])
    mean = weighted_mean(aggregate, shares, sum(counts), 3)
    expected = sum(c * x for c, x in zip(counts, xs)) / sum(counts)
    assert np.max(np.abs(mean - expected)) <= 1e-8


def test_missing_share_raw_is_garbage_and_api_refuses(precise3):
    xs = values(np.random.default_rng(4), 3, 5000)
    aggregate, shares, _ = run_round(precise3, xs)
    truth = np.sum(xs, axis=0)
    raw = fuse_unchecked(aggregate.params, aggregate.data[:, 0], [s.data for s in shares[:2]], aggregate.length)
    assert np.max(np.abs(raw - truth)) >= 1e3
    with pytest.raises(IncompleteShareSetError, match="2 of 3"):
        fuse(aggregate, shares[:2], 3)
    with pytest.raises(CryptoError):  # a duplicate does not stand in for the missing share
        fuse(aggregate, [shares[0], shares[0], shares[1]], 3)
    assert np.max(np.abs(fuse(aggregate, shares, 3) - truth)) <= 1e-6


def test_length_and_padding_preserved(tiny3):
    xs = values(np.random.default_rng(5), 3, 4096 + 17)  # one full ciphertext + a padded one
    aggregate, shares, evs = run_round(tiny3, xs)
    assert len(evs[0].ciphertexts) == 2
    out = fuse(aggregate, shares, 3)
    assert out.shape == (4096 + 17,)
    assert np.max(np.abs(out - np.sum(xs, axis=0))) <= tiny3.params.expected_max_error(3, 1.0, 2)


def test_streaming_aggregator_checks(tiny3, tiny):
    ev = encrypt_vector(tiny3.apk, np.ones(100))
    agg = StreamingAggregator(tiny, tiny3.apk)
    agg.add(ev)
    with pytest.raises(CryptoError, match="twice"):
        agg.add(ev)
    with pytest.raises(ParameterError, match="length"):
        agg.add(encrypt_vector(tiny3.apk, np.ones(101)))
    with pytest.raises(IncompleteShareSetError, match="1 of 3"):
        agg.result()
    # the caller's update is not modified by aggregation
    agg.add(encrypt_vector(tiny3.apk, np.ones(100)))
    agg.add(encrypt_vector(tiny3.apk, np.ones(100)))
    with pytest.raises(CryptoError, match="more updates"):
        agg.add(encrypt_vector(tiny3.apk, np.ones(100)))


def test_encrypt_refuses_overflow_and_nonfinite(tiny3, lean):
    with pytest.raises(ParameterError, match="decodable bound"):
        encrypt_vector(tiny3.apk, np.full(10, tiny3.params.max_sum_magnitude))
    with pytest.raises(ParameterError, match="NaN"):
        encrypt_vector(tiny3.apk, np.array([1.0, np.nan]))


def test_old_epoch_refused_everywhere(tiny):
    old = make_epoch(tiny, 3, run_id="epochs", epoch=1)
    new = make_epoch(tiny, 3, run_id="epochs", epoch=2)
    assert old.apk.epoch_id != new.apk.epoch_id
    xs = values(np.random.default_rng(6), 3, 300)
    old_agg, old_shares, old_evs = run_round(old, xs)
    # an update of the old epoch is refused by the new epoch's aggregator
    with pytest.raises(EpochError):
        StreamingAggregator(tiny, new.apk).add(old_evs[0])
    new_agg, new_shares, new_evs = run_round(new, xs)
    # an old-epoch share is refused at fusion
    with pytest.raises(EpochError):
        fuse(new_agg, [old_shares[0], *new_shares[1:]], 3)
    # an old-epoch key share refuses a new-epoch request, and vice versa
    req = new_agg.decryption_request(next_round())
    with pytest.raises(EpochError):
        old.keys[0].decryption_share(req, new_evs[0])
    with pytest.raises(EpochError):
        new.keys[0].accept(old.apk)


def test_key_share_rotation_cap(tiny):
    ep = make_epoch(tiny, 2, run_id="cap")
    ep.keys[0].max_shares = 1
    xs = values(np.random.default_rng(8), 2, 50)
    run_round(ep, xs)
    evs = [encrypt_vector(ep.apk, x) for x in xs]
    agg = StreamingAggregator(tiny, ep.apk)
    for ev in evs:
        agg.add(ev)
    with pytest.raises(EpochError, match="new key epoch"):
        ep.keys[0].decryption_share(agg.result().decryption_request(next_round()), evs[0])


def test_epoch_policy():
    from bastionfl.crypto import EpochPolicy

    pol = EpochPolicy(rotate_every=3)
    assert pol.must_rotate(0, None, ["a"])
    assert not pol.must_rotate(2, ["a", "b"], ["b", "a"])
    assert pol.must_rotate(3, ["a", "b"], ["a", "b"])
    assert pol.must_rotate(1, ["a", "b"], ["a", "c"])


def test_decoded_sum_above_the_declared_bound_is_refused(lean):
    """An update far above check_sum_fits (made by bypassing encrypt_vector) turns the sum into garbage: fusion
    refuses it with a RangeCheckError instead of returning it; an honest update that merely lies about its bound
    is caught the same way."""
    from bastionfl.crypto import RangeCheckError
    from bastionfl.crypto.scheme import encrypt

    ep = make_epoch(lean, 3, run_id="range")
    xs = values(np.random.default_rng(21), 3, 3000)
    evs = [encrypt_vector(ep.apk, x) for x in xs]
    huge = np.full(3000, 400.0)  # two of these: |sum| = 800 > Q/(2 Delta) = 512, coefficients wrap around Q
    for i in (1, 2):
        evs[i] = EncryptedVector(lean, ep.apk.epoch_id, 3000, encrypt(lean, ep.apk.encryptor, huge), bound=1.0)
    agg = StreamingAggregator(lean, ep.apk)
    for ev in evs:
        agg.add(EncryptedVector.from_bytes(lean, ev.to_bytes()))
    aggregate = agg.result()
    request = aggregate.decryption_request(next_round())
    shares = [k.decryption_share(request, ev) for k, ev in zip(ep.keys, evs)]
    with pytest.raises(RangeCheckError, match="declared bound"):
        fuse(aggregate, shares, 3)
    # a liar inside the decodable range is caught too (the declared total is exceeded), never silently returned
    evs = [encrypt_vector(ep.apk, x) for x in xs[:2]]
    evs.append(EncryptedVector(lean, ep.apk.epoch_id, 3000, encrypt(lean, ep.apk.encryptor, np.full(3000, 50.0)),
                               bound=1.0))
    agg = StreamingAggregator(lean, ep.apk)
    for ev in evs:
        agg.add(ev)
    aggregate = agg.result()
    request = aggregate.decryption_request(next_round())
    with pytest.raises(RangeCheckError):
        fuse(aggregate, [k.decryption_share(request, ev) for k, ev in zip(ep.keys, evs)], 3)
