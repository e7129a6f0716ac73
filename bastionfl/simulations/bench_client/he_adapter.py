"""Every call the client benchmark makes into ``bastionfl.crypto``, in one place.

``crypto/`` is being reworked (malicious-server protocol); when its API changes, this module is the only one of
the benchmark to update. Functions marked PROTOTYPE reach below the public API (``crypto.backend``) to measure
what a streaming server could do; they describe what ``crypto/`` would need, they are not part of the protocol.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from bastionfl import crypto as xc

__all__ = ["HE_PROFILES", "params_of", "new_key_share", "aggregate_key", "accept_key", "encrypt_update",
           "Aggregation", "client_share", "simulated_share", "fuse_sum", "wire_sizes", "StreamingFuse",
           "clone_share", "parse_share", "parse_update", "update_bytes", "accept_key_only",
           "template_share", "StreamingKeyAggregation", "UpdateFactory"]

HE_PROFILES = ("lean", "precise", "lean-n8192")


def params_of(name: str) -> xc.Params:
    """The named xMK-CKKS parameter set; ``lean-n8192`` is ``lean`` at ring degree 8192 (a candidate small-device
    profile, built here with ``custom_params``: log2 QP = 120 of the 218 bits N = 8192 allows at 128-bit security)."""
    if name == "lean-n8192":
        return xc.custom_params(8192, (60,), 60, 50, 20, name="lean-n8192")
    return xc.get_profile(name)


def new_key_share(params: xc.Params, session: str, epoch: int) -> tuple[xc.KeyShare, bytes]:
    """Client, key epoch: a fresh key share from the public seed, and its public share's wire bytes."""
    key = xc.KeyShare.generate(params, xc.CrsSeed.from_session(session, epoch))
    return key, key.public_share().to_bytes()


def aggregate_key(params: xc.Params, session: str, epoch: int, shares: Sequence[bytes]) -> tuple[Any, bytes]:
    """Server: the aggregated public key of the parsed public shares, and its wire bytes."""
    crs = xc.CrsSeed.from_session(session, epoch)
    apk = xc.AggregatedPublicKey.aggregate(params, crs, [xc.PublicKeyShare.from_bytes(params, b) for b in shares])
    return apk, apk.to_bytes()


def accept_key(key: xc.KeyShare, params: xc.Params, apk_bytes: bytes | bytearray) -> Any:
    """Client: parse the aggregated key and bind the key share to it (refuses a key without this client's share)."""
    apk = xc.AggregatedPublicKey.from_bytes(params, apk_bytes)
    key.accept(apk)
    return apk


def accept_key_only(params: xc.Params, apk_bytes: bytes | bytearray) -> Any:
    """Parse an aggregated key (a producer of simulated clients' updates, which holds no key share of it)."""
    return xc.AggregatedPublicKey.from_bytes(params, apk_bytes)


def encrypt_update(apk: Any, update: np.ndarray) -> tuple[bytes, bytes]:
    """Client: the update encrypted under the aggregated key (wire bytes) and the digest of its own c1 entry."""
    encrypted = xc.encrypt_vector(apk, update)
    return encrypted.to_bytes(), encrypted.c1_digest()


def update_bytes(apk: Any, update: np.ndarray) -> tuple[Any, bytes]:
    """A simulated client's encrypted update: the object (kept for its share) and its wire bytes."""
    encrypted = xc.encrypt_vector(apk, update)
    return encrypted, encrypted.to_bytes()


def parse_update(params: xc.Params, blob: bytes | bytearray) -> Any:
    """Server: parse and validate one encrypted update."""
    return xc.EncryptedVector.from_bytes(params, blob)


class Aggregation:
    """Server: streaming homomorphic sum of one round, then the decryption request.

    ``keep_c1_lists=False`` is a PROTOTYPE of the digest-only request the malicious-server protocol allows: the
    per-participant c1 lists are dropped after each add, so memory stays O(one update + n digests); such an
    aggregate can be fused but cannot build today's request.
    """

    def __init__(self, params: xc.Params, apk: Any, keep_c1_lists: bool = True) -> None:
        self.params = params
        self._agg = xc.StreamingAggregator(params, apk)
        self.keep = keep_c1_lists
        self.aggregate: Any = None
        self.request: Any = None

    def add(self, update: Any) -> None:
        """Add one parsed update."""
        self._agg.add(update)
        if not self.keep:
            self._agg._components[-1] = []  # PROTOTYPE: only the digest (kept by the aggregator) survives

    def finish(self, round_number: int) -> bytes | None:
        """Close the round; with c1 lists, build and return today's decryption request bytes (else None)."""
        self.aggregate = self._agg.result()
        self.request = self.aggregate.decryption_request(round_number)
        return self.request.to_bytes() if self.keep else None

    @property
    def transcript(self) -> bytes:
        """The request's transcript digest (what every share must answer)."""
        return self.request.transcript


def client_share(key: xc.KeyShare, params: xc.Params, request: bytes | bytearray, own_digest: bytes) -> bytes:
    """Client, decrypt stage: parse the request, check C1 against the listed c1 (own included), share; wire bytes."""
    parsed = xc.DecryptionRequest.from_bytes(params, request)
    return key.decryption_share(parsed, own_digest).to_bytes()


def simulated_share(key: xc.KeyShare, aggregation: Aggregation, own: Any) -> Any:
    """Server-side simulated client: its share against the request object the server built (parsed once)."""
    return key.decryption_share(aggregation.request, own)


def parse_share(params: xc.Params, blob: bytes | bytearray) -> Any:
    """Server: parse and validate one decryption share."""
    return xc.DecryptionShare.from_bytes(params, blob)


def fuse_sum(aggregation: Aggregation, shares: Sequence[Any]) -> np.ndarray:
    """Server: today's fusion (all shares at once) into the decoded sum."""
    return xc.fuse(aggregation.aggregate, shares, aggregation.aggregate.participants)


def clone_share(template: Any, epoch_id: bytes, transcript: bytes, sender: bytes, round_number: int) -> bytes:
    """A share of ``template``'s shape under another sender: a timing stand-in for the server benchmark (the
    decoded numbers are meaningless, the server's parsing, checks and additions are the same)."""
    return xc.DecryptionShare(template.params, epoch_id, round_number, transcript, sender,
                              template.plaintexts).to_bytes()


class UpdateFactory:
    """Distinct valid encrypted updates for simulated clients, cheaply: ``pool`` fresh encryptions, then sums of
    distinct 4-subsets of them (a few homomorphic additions instead of one encryption each). For the server
    benchmark, whose figures never include producing its inputs."""

    def __init__(self, apk: Any, length: int, pool: int = 16, seed: int = 0) -> None:
        from itertools import combinations

        rng = np.random.default_rng(seed)
        self.apk, self.length = apk, length
        self.pool = [xc.encrypt_vector(apk, rng.uniform(-0.01, 0.01, length)) for _ in range(pool)]
        self._subsets = combinations(range(pool), 4)
        self._fresh = 0

    def next_bytes(self) -> bytes:
        """The next update's wire bytes (the fresh ones first)."""
        import tenseal.sealapi as sa
        from bastionfl.crypto.backend import backend

        if self._fresh < len(self.pool):
            self._fresh += 1
            return self.pool[self._fresh - 1].to_bytes()
        idx = next(self._subsets)
        ev = backend(self.apk.params).eval_a
        cts = []
        for k in range(len(self.pool[0].ciphertexts)):
            acc = sa.Ciphertext()
            ev.add(self.pool[idx[0]].ciphertexts[k], self.pool[idx[1]].ciphertexts[k], acc)
            for i in idx[2:]:
                ev.add_inplace(acc, self.pool[i].ciphertexts[k])
            cts.append(acc)
        return xc.EncryptedVector(self.apk.params, self.apk.epoch_id, self.length, cts).to_bytes()


def template_share(params: xc.Params, length: int) -> Any:
    """One real decryption share for an update of ``length`` floats (from a one-participant epoch of its own)."""
    key, pub = new_key_share(params, "bench-template", 0)
    apk, apk_bytes = aggregate_key(params, "bench-template", 0, [pub])
    accept_key(key, params, apk_bytes)
    ev, _ = update_bytes(apk, np.zeros(length))
    agg = Aggregation(params, apk)
    agg.add(ev)
    agg.finish(1)
    return simulated_share(key, agg, ev)


class StreamingFuse:
    """PROTOTYPE of a streaming fusion for ``crypto/``: add each share into ``C0`` as it arrives (same checks as
    ``crypto.fuse``: epoch, sender in the epoch, transcript, count, no duplicate), so the server holds one share at a
    time instead of n."""

    def __init__(self, aggregation: Aggregation) -> None:
        from bastionfl.crypto.backend import backend

        self.agg = aggregation.aggregate
        self.transcript = aggregation.transcript
        self.round = aggregation.request.round_number
        self.be = backend(self.agg.params)
        self.acc: list[Any] | None = None
        self.senders: set[bytes] = set()

    def add(self, share: Any) -> None:
        """Check one share and add it into the running sum."""
        import tenseal.sealapi as sa

        if share.epoch_id != self.agg.epoch_id or share.sender not in self.agg.share_digests:
            raise xc.VerificationError("share of another epoch or from outside the key epoch")
        if share.round_number != self.round or not hmac.compare_digest(share.transcript, self.transcript):
            raise xc.VerificationError("share answers another request (transcript mismatch)")
        if share.sender in self.senders or len(share.plaintexts) != len(self.agg.ciphertexts):
            raise xc.VerificationError("duplicate share or wrong number of plaintexts")
        self.senders.add(share.sender)
        ev = self.be.eval_a
        if self.acc is None:
            self.acc = []
            for ct, pt in zip(self.agg.ciphertexts, share.plaintexts):
                out = sa.Ciphertext()
                ev.add_plain(ct, pt, out)
                self.acc.append(out)
        else:
            for acc, pt in zip(self.acc, share.plaintexts):
                ev.add_plain_inplace(acc, pt)

    def result(self) -> np.ndarray:
        """The decoded sum; refuses an incomplete share set like ``crypto.fuse``."""
        from bastionfl.crypto.encryption import decode_plaintexts

        if self.acc is None or len(self.senders) != self.agg.participants:
            raise xc.IncompleteShareSetError(f"{len(self.senders)} of {self.agg.participants} shares")
        return decode_plaintexts(self.agg.params, [self.be.c0(ct) for ct in self.acc], self.agg.length)


class StreamingKeyAggregation:
    """PROTOTYPE of a streaming key aggregation for ``crypto/``: add each public share into ``Σ b_i`` as it
    arrives, with ``AggregatedPublicKey.aggregate``'s checks (parameters, CRS, built on ``a``, no duplicate), so
    the server holds one share at a time instead of n."""

    def __init__(self, params: xc.Params, session: str, epoch: int) -> None:
        from bastionfl.crypto.backend import backend
        from bastionfl.crypto.crs import crs_material

        self.params, self.crs = params, xc.CrsSeed.from_session(session, epoch)
        self.be, self.a0 = backend(params), crs_material(params, self.crs).a0
        self.acc: Any = None
        self.digests: list[bytes] = []

    def add(self, blob: bytes | bytearray) -> None:
        """Parse (``from_bytes`` checks level, form and ``a``) and add one public share."""
        import tenseal.sealapi as sa

        share = xc.PublicKeyShare.from_bytes(self.params, blob)
        if share.crs != self.crs or share.digest in self.digests:
            raise xc.EpochError("public share of another key epoch, or a duplicate")
        self.digests.append(share.digest)
        if self.acc is None:
            tmp, self.acc = sa.Ciphertext(), sa.Ciphertext()
            self.be.eval_b.negate(share.ciphertext, tmp)
            self.be.eval_b.negate(tmp, self.acc)
        else:
            self.be.eval_b.add_inplace(self.acc, share.ciphertext)

    def result(self) -> Any:
        """``(Σ b_i, a)`` as an ``AggregatedPublicKey`` (the same object ``aggregate`` returns)."""
        import tenseal.sealapi as sa

        for _ in range(len(self.digests) - 1):
            self.be.eval_b.sub_inplace(self.acc, self.a0)
        tmp, pk = sa.Ciphertext(), sa.PublicKey()
        self.be.eval_b.negate(self.acc, tmp)
        self.be.eval_b.negate(tmp, pk.data())
        return xc.AggregatedPublicKey(self.params, self.crs, tuple(sorted(self.digests)), pk)


@dataclass(frozen=True)
class WireSizes:
    """Exact wire sizes for one update length: what the sweep uses to predict what it does not run."""

    ciphertexts: int
    update_bytes: int
    c1_list_bytes: int
    share_bytes: int

    def request_bytes(self, participants: int) -> int:
        """Today's request: the aggregate C1 and every participant's c1 list."""
        return (participants + 1) * self.c1_list_bytes


@lru_cache(maxsize=16)
def _per_ciphertext(name: str) -> tuple[int, int, int]:
    """Bytes of one ciphertext, one (0, c1) blob and one share plaintext, measured on a one-ciphertext update."""
    params = params_of(name)
    key, pub = new_key_share(params, "bench-client-sizes", 0)
    apk, apk_bytes = aggregate_key(params, "bench-client-sizes", 0, [pub])
    accept_key(key, params, apk_bytes)
    ev, blob = update_bytes(apk, np.zeros(params.floats_per_ciphertext))
    agg = Aggregation(params, apk)
    agg.add(ev)
    req = agg.finish(0)
    assert req is not None
    share = simulated_share(key, agg, ev).to_bytes()
    return len(blob), len(req) // 2, len(share)


def wire_sizes(name: str, length: int) -> WireSizes:
    """Sizes of an update of ``length`` floats under profile ``name`` (per-ciphertext sizes measured once)."""
    params = params_of(name)
    n_ct = max(1, -(-length // params.floats_per_ciphertext))
    ct, c1, share = _per_ciphertext(name)
    return WireSizes(n_ct, n_ct * ct, n_ct * c1, n_ct * share)


def digest(data: bytes) -> str:
    """Short hex digest for logs (never of secrets)."""
    return hashlib.sha256(data).hexdigest()[:12]
