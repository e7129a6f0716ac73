"""Helpers of the adversarial tests: a server that deviates, built from the public message types and bytes."""

from __future__ import annotations

import math

import numpy as np
import tenseal.sealapi as sa
from tenseal.sealapi import util

from bastionfl.crypto import (
    ClientEpoch,
    Params,
    RoundConfirmation,
    RoundProposal,
    ThreatModel,
    TranscriptSignature,
    Upload,
)
from bastionfl.crypto.client_round import aggregate_digest_of
from bastionfl.crypto.polyarith import centred
from bastionfl.crypto.scheme import secret_data

from .engine import Federation


def collect(fed: Federation, round_number: int, xs: list[np.ndarray]):
    """Honest uploads of a round through the honest server; returns (server round, {member: Upload})."""
    p = fed.params
    srv = fed.server.new_round(round_number)
    ups = [c.upload(round_number, x) for c, x in zip(fed.clients, xs)]
    if fed.threat is ThreatModel.MALICIOUS_COLLUDING:
        for u in ups:
            srv.add_commitment(u)
        lst = srv.commitment_list()
        ups = [c.on_commitment_list(lst) for c in fed.clients]
    parsed = {}
    for u in ups:
        srv.add_upload(u)
        up = Upload.from_bytes(p, u)
        parsed[up.commitment.member] = up
    return srv, parsed


def proposal(fed: Federation, round_number: int, uploads: dict, aggregate: np.ndarray, members=None,
             with_c1: bool = False) -> bytes:
    """A proposal over the given members' real commitments but any aggregate the server likes."""
    members = sorted(uploads) if members is None else members
    first = uploads[members[0]].commitment
    return RoundProposal(round_number, first.length, tuple(members), tuple(uploads[i].commitment for i in members),
                         aggregate_digest_of(aggregate), aggregate if with_c1 else None).to_bytes(fed.params)


def sign_all(fed: Federation, prop: bytes, clients=None) -> list[TranscriptSignature]:
    """Every (or the given) client's transcript signature on ``prop``, in member order."""
    sigs = [TranscriptSignature.from_bytes(fed.params, c.on_round_proposal(prop)) for c in (clients or fed.clients)]
    return sorted(sigs, key=lambda s: s.member)


def confirmation(fed: Federation, round_number: int, length: int, sigs, c1=None, components=()) -> bytes:
    return RoundConfirmation(round_number, length, tuple(sigs), c1, tuple(components)).to_bytes(fed.params)


def constant(params: Params, k: int, value: int) -> np.ndarray:
    """The constant polynomial ``value`` in NTT form (every NTT slot equals it), shape (k, L, N)."""
    return np.full((k, len(params.data_bits), params.poly_modulus_degree), value, dtype=np.uint64)


def coefficients(params: Params, ntt_row: np.ndarray, prime: int = 0) -> np.ndarray:
    """Coefficient form (centred, first prime) of one NTT-form polynomial row."""
    n, q = params.poly_modulus_degree, params.primes[prime]
    raw = util.inverse_ntt_negacyclic_harvey([int(v) for v in ntt_row], util.NTTTables(int(math.log2(n)), sa.Modulus(q)))
    return centred(np.array([v % q for v in raw], dtype=np.uint64), q)


def secret_coefficients(client: ClientEpoch) -> np.ndarray:
    """Test-only peek at a client's secret (coefficient form, first prime): what an attack would recover."""
    return coefficients(client.params, secret_data(client.params, client.key._KeyShare__secret)[0])


def recover_from_share(params: Params, share: np.ndarray, x: int) -> np.ndarray:
    """round(D / X) for a share D = s X + E against the constant X: the secret when X >> the flood."""
    return np.rint(coefficients(params, share[0, 0]) / x).astype(np.int64)
