"""Shared helpers of the review attack tests (honest uploads and messages through the bytes)."""

from __future__ import annotations

import numpy as np

from bastionfl.crypto import ClientEpoch, ClientPolicy, ServerEpoch
from bastionfl.crypto.polyarith import sum_mod

SIGNED = ["malicious", "malicious-colluding"]


def updates(n=3, size=300, seed=0):
    """n seeded update vectors in [-1, 1)."""
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, size) for _ in range(n)]


def components(uploads):
    """The c1 of each upload, in member order."""
    return [np.ascontiguousarray(uploads[i].data[:, 1]) for i in sorted(uploads)]


def c1_of(uploads, params):
    """The honest aggregate C1 of the uploads."""
    return sum_mod(components(uploads), params.data_primes)


def conf_kw(threat, uploads, params):
    """What a confirmation carries: C1 (malicious) or every c1 of U (malicious-colluding)."""
    return dict(c1=c1_of(uploads, params)) if threat == "malicious" else dict(components=components(uploads))


def opened(params, threat, n, run_id, epoch=0):
    """K0/K1 through the bytes: the server's epoch, the clients and their replies."""
    policy = ClientPolicy(threat, min_members=3, min_uploads=3)
    server, _ = ServerEpoch.open(params, threat, run_id, epoch)
    pairs = [ClientEpoch.open(params, server.opening.to_bytes(params), policy) for _ in range(n)]
    return server, [c for c, _ in pairs], [r for _, r in pairs]
