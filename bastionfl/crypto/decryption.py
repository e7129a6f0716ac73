"""Decrypt stage: the server's request, the client's checked and smudged share, and fusion into the decoded sum."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np
import tenseal.sealapi as sa

from .aggregation import Aggregate
from .backend import backend, load, save, second_components_equal
from .encryption import (
    EncryptedVector,
    MAX_LENGTH,
    chunk_count,
    ciphertext_blob_limit,
    decode_plaintexts,
    load_ciphertexts,
    set_digest,
)
from .errors import CryptoError, CryptoFormatError, EpochError, IncompleteShareSetError, VerificationError
from .keys import MAX_PARTICIPANTS
from .noise import smudging_plaintext
from .params import Params
from .wire import Kind, Reader, Writer, check_seal_blob, guarded, open_envelope, seal

if TYPE_CHECKING:
    from .keys import KeyShare


def transcript_digest(
    epoch_id: bytes, round_number: int, length: int, c1_digest: bytes, component_digests: list[bytes]
) -> bytes:
    """Digest binding a request: epoch, round, length, aggregate C1 and every participant's c1 list in order."""
    h = hashlib.sha256(b"bastionfl/xmkckks/transcript/v1\x00" + epoch_id)
    h.update(round_number.to_bytes(8, "little") + length.to_bytes(8, "little") + c1_digest)
    h.update(len(component_digests).to_bytes(4, "little"))
    for d in component_digests:
        h.update(d)
    return h.digest()


@dataclass(eq=False)
class DecryptionRequest:
    """Server → clients: aggregate ``C1`` and the list of every participant's ``c1`` (one entry each)."""

    params: Params
    epoch_id: bytes
    round_number: int
    length: int
    c1: list[bytes] = field(repr=False)
    components: list[list[bytes]] = field(repr=False)
    _loaded: tuple[list[sa.Ciphertext], list[list[sa.Ciphertext]]] | None = field(default=None, repr=False)

    @classmethod
    def build(cls, aggregate: Aggregate, round_number: int) -> "DecryptionRequest":
        """Server side: extract ``(0, C1)`` per ciphertext and record the transcript for fusion."""
        if not 0 <= round_number < 2**63:
            raise CryptoError("round number out of range")
        be = backend(aggregate.params)
        c1 = [save(be.c1_only(ct, be.eval_a)) for ct in aggregate.ciphertexts]
        req = cls(aggregate.params, aggregate.epoch_id, round_number, aggregate.length, c1, aggregate.components)
        aggregate.transcripts[round_number] = req.transcript
        return req

    _digests: tuple[bytes, list[bytes]] | None = field(default=None, repr=False)

    def digests(self) -> tuple[bytes, list[bytes]]:
        """SHA-256 of the aggregate C1 blobs and of each participant's c1 blobs (computed once)."""
        if self._digests is None:
            self._digests = (set_digest(self.c1), [set_digest(comp) for comp in self.components])
        return self._digests

    @property
    def transcript(self) -> bytes:
        """Digest of everything the request asks a client to decrypt."""
        c1_digest, component_digests = self.digests()
        return transcript_digest(self.epoch_id, self.round_number, self.length, c1_digest, component_digests)

    def loaded(self) -> tuple[list[sa.Ciphertext], list[list[sa.Ciphertext]]]:
        """The SEAL ciphertexts of C1 and of each component, validated (loaded once)."""
        if self._loaded is None:
            what = "decryption request"
            self._loaded = (
                load_ciphertexts(self.params, self.c1, what),
                [load_ciphertexts(self.params, comp, what) for comp in self.components],
            )
        return self._loaded

    def to_bytes(self) -> bytes:
        """Wire form."""
        w = Writer().raw(self.epoch_id).u64(self.round_number).u64(self.length).blobs(self.c1)
        w.u32(len(self.components))
        for comp in self.components:
            w.blobs(comp)
        return seal(Kind.DECRYPTION_REQUEST, self.params, w.getvalue())

    @classmethod
    def from_bytes(cls, params: Params, data: bytes) -> "DecryptionRequest":
        """Parse and validate every ciphertext (``CryptoFormatError`` on any defect)."""
        r = Reader(open_envelope(Kind.DECRYPTION_REQUEST, params, data), "decryption request")
        epoch_id = r.raw(16)
        round_number = r.u64()
        length = r.u64()
        if not 1 <= length <= MAX_LENGTH or round_number >= 2**63:
            raise CryptoFormatError("decryption request: length or round out of range")
        n_ct = chunk_count(params, length)
        limit = ciphertext_blob_limit(params)
        c1 = r.blobs(n_ct, limit)
        count = r.u32()
        if not 1 <= count <= MAX_PARTICIPANTS:
            raise CryptoFormatError("decryption request: participant count out of range")
        components = [r.blobs(n_ct, limit) for _ in range(count)]
        r.done()
        if any(len(x) != n_ct for x in [c1, *components]):
            raise CryptoFormatError("decryption request: ciphertext count does not match the length")
        req = cls(params, epoch_id, round_number, length, c1, components)
        req.loaded()
        return req


@dataclass(eq=False)
class DecryptionShare:
    """Client → server: ``D_i = s_i·C1 + e*`` per ciphertext, bound to the request's transcript."""

    params: Params
    epoch_id: bytes
    round_number: int
    transcript: bytes
    sender: bytes  # digest of the sender's public key share
    plaintexts: list[sa.Plaintext] = field(repr=False)

    def to_bytes(self) -> bytes:
        """Wire form."""
        w = Writer().raw(self.epoch_id).u64(self.round_number).raw(self.transcript).raw(self.sender)
        return seal(Kind.DECRYPTION_SHARE, self.params, w.blobs([save(p) for p in self.plaintexts]).getvalue())

    @classmethod
    def from_bytes(cls, params: Params, data: bytes) -> "DecryptionShare":
        """Parse and validate every plaintext (level, coefficient count, NTT form, scale)."""
        r = Reader(open_envelope(Kind.DECRYPTION_SHARE, params, data), "decryption share")
        epoch_id = r.raw(16)
        round_number = r.u64()
        transcript = r.raw(32)
        sender = r.raw(32)
        limit = params.poly_modulus_degree * len(params.data_bits) * 8 + 4096
        blobs = r.blobs(chunk_count(params, MAX_LENGTH), limit)
        r.done()
        if not blobs:
            raise CryptoFormatError("decryption share: no plaintexts")
        be = backend(params)
        pts = []
        for blob in blobs:
            check_seal_blob(blob, "decryption share")
            pt = sa.Plaintext()
            guarded("decryption share", lambda: load(pt, be.ctx_a, blob))
            if (
                pt.parms_id() != be.data_parms_id
                or pt.coeff_count() != be.data_coeff_count
                or not pt.is_ntt_form()
                or pt.scale != params.scale
            ):
                raise CryptoFormatError("decryption share: wrong level, size, form or scale")
            pts.append(pt)
        return cls(params, epoch_id, round_number, transcript, sender, pts)


def share_plaintexts(key: "KeyShare", targets: list[sa.Ciphertext], smudging_std: float) -> list[sa.Plaintext]:
    """``s_i·c1 + e*`` for each target ``(0, c1)``; ``smudging_std == 0`` only in tests demonstrating the leak."""
    be = backend(key.params)
    out = []
    for t in targets:
        if smudging_std > 0:
            e = key.take_smudging() if smudging_std == key.params.smudging_std else None
            if e is None or e.parms_id() != t.parms_id():
                e = smudging_plaintext(be.encoder_b, key.params.poly_modulus_degree, t.parms_id(), 1.0, smudging_std)
            e.scale = t.scale
            be.eval_a.add_plain_inplace(t, e)
        out.append(key._secret_decrypt(t))
    return out


def make_share(key: "KeyShare", request: DecryptionRequest, own: EncryptedVector | bytes) -> DecryptionShare:
    """Client side of the decrypt stage; see ``KeyShare.decryption_share``."""
    params = key.params
    if request.params != params or (isinstance(own, EncryptedVector) and own.params != params):
        raise EpochError("request of another parameter set")
    if key.epoch_id is None or key.participants is None:
        raise EpochError("no aggregated key accepted for this key share (call accept() first)")
    own_epoch_ok = not isinstance(own, EncryptedVector) or own.epoch_id == key.epoch_id
    if not hmac.compare_digest(request.epoch_id, key.epoch_id) or not own_epoch_ok:
        raise EpochError("request or own update of another (old) key epoch: refused")
    own_digest = own.c1_digest() if isinstance(own, EncryptedVector) else bytes(own)
    if key.max_shares is not None and len(key.used_rounds) >= key.max_shares:
        raise EpochError(f"this key share already produced {key.max_shares} shares: a new key epoch is required")
    if len(request.components) != key.participants:
        raise VerificationError(
            f"request lists {len(request.components)} c1 entries, the key epoch has {key.participants} participants"
        )
    digests = request.digests()[1]
    if len(set(digests)) != len(digests):
        raise VerificationError("request lists the same c1 entry twice")
    if own_digest not in digests:
        raise VerificationError("request does not contain this client's own c1")
    set_id = hashlib.sha256(b"".join(sorted(digests))).digest()
    if request.round_number in key.used_rounds:
        raise VerificationError(f"a share was already produced for round {request.round_number}: refused")
    if set_id in key.used_sets:
        raise VerificationError("a share was already produced for this ciphertext set: refused")
    c1_cts, comp_cts = request.loaded()
    be = backend(params)
    targets = []
    for k, c1 in enumerate(c1_cts):
        acc = sa.Ciphertext()
        be.eval_a.add_many([comp[k] for comp in comp_cts], acc)
        if not second_components_equal(be.eval_a, acc, c1):
            raise VerificationError(f"C1 of ciphertext {k} is not the sum of the listed c1 components: refused")
        # acc = (Σ c0 of the listed entries, C1): honest entries have c0 = 0; a non-zero c0 chosen by the server only
        # shifts the share by a polynomial the server already knows, so extracting (0, C1) again is not needed.
        targets.append(acc)
    key.used_rounds.add(request.round_number)
    key.used_sets.add(set_id)
    pts = share_plaintexts(key, targets, params.smudging_std)
    return DecryptionShare(params, key.epoch_id, request.round_number, request.transcript, key.public_share().digest, pts)


def fuse_unchecked(aggregate: Aggregate, shares: Sequence[Sequence[sa.Plaintext]]) -> np.ndarray:
    """``C0 + Σ D_i`` decoded, with no completeness check: for tests that show what a missing share gives."""
    be = backend(aggregate.params)
    fused = []
    for k, ct in enumerate(aggregate.ciphertexts):
        acc = sa.Ciphertext()
        if shares:
            be.eval_a.add_plain(ct, shares[0][k], acc)
            for s in shares[1:]:
                be.eval_a.add_plain_inplace(acc, s[k])
        else:
            be.eval_a.negate(ct, acc)
            be.eval_a.negate_inplace(acc)
        fused.append(be.c0(acc))
    return decode_plaintexts(aggregate.params, fused, aggregate.length)


def fuse(aggregate: Aggregate, shares: Sequence[DecryptionShare], expected_participants: int) -> np.ndarray:
    """Decode the sum from one valid share per participant; ``IncompleteShareSetError`` if any is missing."""
    if expected_participants != aggregate.participants:
        raise IncompleteShareSetError(
            f"expected {expected_participants} participants but the key epoch has {aggregate.participants}"
        )
    by_sender: dict[bytes, DecryptionShare] = {}
    for s in shares:
        if s.params != aggregate.params or s.epoch_id != aggregate.epoch_id:
            raise EpochError("decryption share of another parameter set or (old) key epoch: refused")
        if s.sender not in aggregate.share_digests:
            raise VerificationError("decryption share from a party outside the key epoch")
        expected = aggregate.transcripts.get(s.round_number)
        if expected is None or not hmac.compare_digest(expected, s.transcript):
            raise VerificationError("decryption share answers another request (transcript mismatch)")
        if len(s.plaintexts) != len(aggregate.ciphertexts):
            raise CryptoFormatError("decryption share has the wrong number of plaintexts")
        if s.sender in by_sender:
            raise VerificationError("two decryption shares from the same participant")
        by_sender[s.sender] = s
    rounds = {s.round_number for s in by_sender.values()}
    if len(by_sender) < expected_participants or len(rounds) > 1:
        missing = expected_participants - len(by_sender)
        raise IncompleteShareSetError(
            f"share set incomplete: {len(by_sender)} of {expected_participants} participants ({missing} missing); "
            "decoding without every share gives noise, so nothing is returned"
        )
    ordered = [by_sender[d].plaintexts for d in aggregate.share_digests]
    return fuse_unchecked(aggregate, ordered)


def weighted_mean(
    aggregate: Aggregate, shares: Sequence[DecryptionShare], total_count: float, expected_participants: int
) -> np.ndarray:
    """FedAvg: clients encrypted ``n_k·x_k``; the fused sum divided by ``Σ n_k`` is the weighted mean."""
    if not total_count > 0:
        raise CryptoError("total_count must be positive")
    return fuse(aggregate, shares, expected_participants) / float(total_count)
