"""The streaming client prototype (``bench client --stream``): the same share as the library's, and the same
refusals — a forged C1, a replayed round, a corrupted envelope — while holding one update, not the request."""

from __future__ import annotations

import io

import numpy as np
import pytest

from bastionfl import crypto as xc
from bastionfl.simulations.bench_client.he_stream import assemble_update, encrypt_chunks, stream_share

N_CLIENTS, LENGTH = 3, 40_000


@pytest.fixture(scope="module")
def epoch():
    params = xc.get_profile("lean")
    crs = xc.CrsSeed.from_session("stream-test", 0)
    keys = [xc.KeyShare.generate(params, crs) for _ in range(N_CLIENTS)]
    apk = xc.AggregatedPublicKey.aggregate(params, crs, [k.public_share() for k in keys])
    for k in keys:
        k.accept(apk)
    rng = np.random.default_rng(1)
    xs = [rng.uniform(-1, 1, LENGTH) for _ in range(N_CLIENTS)]
    return params, keys, apk, xs


def _round(epoch, round_number):
    params, keys, apk, xs = epoch
    streamed = list(encrypt_chunks(apk, xs[0]))
    own = streamed[-1][1]
    first = assemble_update(params, [blob for blob, _ in streamed[:-1]])
    assert first.c1_digest() == own  # the running digest equals the library's
    evs = [first] + [xc.encrypt_vector(apk, x) for x in xs[1:]]
    agg = xc.StreamingAggregator(params, apk)
    for ev in evs:
        agg.add(ev)
    aggregate = agg.result()
    return aggregate, aggregate.decryption_request(round_number), evs, own


def test_streamed_share_decodes_like_the_library(epoch):
    params, keys, _, xs = epoch
    aggregate, request, evs, own = _round(epoch, 1)
    data = request.to_bytes()
    share = xc.DecryptionShare.from_bytes(params, stream_share(keys[0], io.BytesIO(data).read, len(data), own))
    others = [k.decryption_share(xc.DecryptionRequest.from_bytes(params, data), ev) for k, ev in zip(keys[1:], evs[1:])]
    total = xc.fuse(aggregate, [share, *others], N_CLIENTS)
    assert np.max(np.abs(total - np.sum(xs, axis=0))) <= params.expected_max_error(N_CLIENTS)
    with pytest.raises(xc.VerificationError, match="already produced"):
        stream_share(keys[0], io.BytesIO(data).read, len(data), own)


def test_streamed_share_refuses_a_forged_c1_and_a_corrupted_envelope(epoch):
    params, keys, _, _ = epoch
    _, request, _, own = _round(epoch, 2)
    forged = xc.DecryptionRequest(params, request.epoch_id, 2, request.length, request.components[1],
                                  request.components)  # C1 = another client's c1: the MK-CKKS key-recovery attack
    data = forged.to_bytes()
    with pytest.raises(xc.VerificationError, match="not the sum"):
        stream_share(keys[0], io.BytesIO(data).read, len(data), own)
    data = bytearray(request.to_bytes())
    data[len(data) // 2] ^= 1
    with pytest.raises(xc.CryptoFormatError):
        stream_share(keys[0], io.BytesIO(bytes(data)).read, len(data), own)
    missing = xc.DecryptionRequest(params, request.epoch_id, 3, request.length, request.c1, request.components[1:])
    data = missing.to_bytes()
    with pytest.raises(xc.VerificationError, match="participants"):
        stream_share(keys[0], io.BytesIO(data).read, len(data), own)
