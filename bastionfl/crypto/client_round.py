"""Client side of a round, driven by bytes: upload (commit, reveal), transcript signature, decryption share.

honest-but-curious: U1 ``Upload``; D1 ``RoundProposal`` carries C1 -> ``RoundShare``.
malicious: U1 ``Upload`` with a signed commitment; D1 ``RoundProposal`` (U, commitments, ``H(C1)``) -> the client
signs the round transcript with a sketch of its own c1 at a challenge derived from it; D2 ``RoundConfirmation``
(every member's signature on the same transcript, and C1) -> share only if the sketches of U sum to C1's sketch.
malicious-colluding: U1 signed commitment only; U2 ``CommitmentList`` -> reveal; D1 as malicious, without sketch;
D2 brings every c1 of U: each must match its commitment, and the client sums them itself.
Every share: one per round, one per aggregate digest ever, at most ``max_shares`` per epoch (kept in local state).
"""

from __future__ import annotations

import hmac
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from . import scheme
from .commitment import UploadCommitment, component_digests
from .encryption import check_values
from .errors import (
    CryptoFormatError,
    ProtocolStateError,
    ReplayError,
    VerificationError,
)
from .identity import verify
from .polyarith import digest, sum_mod
from .round_messages import (
    CommitmentList,
    RoundConfirmation,
    RoundProposal,
    RoundShare,
    TranscriptSignature,
    Upload,
    commitment_to_bytes,
    round_sketch_shape,
)
from .sketch import challenge_key, sketch, sketch_bytes, sketch_sum
from .threat import ThreatModel
from .threshold import MAX_REPROPOSALS, attempt_aggregate, check_decrypting_set, decryption_transcript
from .transcript import hash_parts, round_transcript, transcript_signature_message
from .wire import Reader, Writer

if TYPE_CHECKING:
    from .client_epoch import ClientEpoch
    from .params import Params


def aggregate_digest_of(c1: np.ndarray) -> bytes:
    """Digest of an aggregate C1 (k, L, N): what the transcript binds and the replay record keeps."""
    return digest(b"aggregate-c1", c1)


def round_challenge(transcript: bytes) -> bytes:
    """Challenge key of the round sketch: the transcript already contains ``H(C1)``."""
    return challenge_key(b"round", transcript)


@dataclass
class RoundRecord:
    """What a client remembers of one round (persisted with the epoch's local state)."""

    commitment: UploadCommitment | None = None
    own: np.ndarray | None = field(default=None, repr=False)  # colluding: ciphertexts until revealed; else own c1
    revealed: tuple[bytes, ...] | None = None  # digests of the commitment list seen before revealing
    transcript: bytes | None = None
    proposal: RoundProposal | None = field(default=None, repr=False)
    signature: bytes | None = None
    own_sketch: np.ndarray | None = field(default=None, repr=False)
    shared: bool = False
    vector: bytes | None = None  # digest of the uploaded values: the same update may not meet two upload sets
    reproposals: int = 0  # malicious t-of-n: strictly smaller upload sets signed after the first (bounded)

    def write(self, w: Writer, params: Params) -> Writer:
        w.u8(0) if self.commitment is None else self.commitment.write(w.u8(1))
        w.u8(0) if self.own is None else w.u8(1).u8(self.own.ndim).array(self.own)
        if self.revealed is None:
            w.u8(0)
        else:
            w.u8(1).u32(len(self.revealed))
            for d in self.revealed:
                w.raw(d)
        w.u8(0) if self.transcript is None else w.u8(1).raw(self.transcript)
        w.u8(0) if self.signature is None else w.u8(1).raw(self.signature)
        w.u8(0) if self.own_sketch is None else w.u8(1).array(self.own_sketch)
        w.u8(0) if self.proposal is None else w.u8(1).blob(self.proposal.to_bytes(params))
        w.u8(0) if self.vector is None else w.u8(1).raw(self.vector)
        return w.u8(int(self.shared)).u8(self.reproposals)

    @classmethod
    def read(cls, params: Params, r: Reader) -> RoundRecord:
        from .decryption import c1_shape
        from .encryption import ciphertext_shape
        from .round_messages import RoundProposal as _Proposal

        def flag() -> bool:
            f = r.u8()
            if f not in (0, 1):
                raise CryptoFormatError("local round record: malformed flag")
            return bool(f)

        rec = cls()
        if flag():
            rec.commitment = UploadCommitment.read(r)
        if flag():
            ndim = r.u8()
            if rec.commitment is None or ndim not in (3, 4):
                raise CryptoFormatError("local round record: own data without a commitment")
            shape = ciphertext_shape(params, rec.commitment.length) if ndim == 4 else c1_shape(params, rec.commitment.length)
            rec.own = r.array(shape, params.data_primes)
        if flag():
            rec.revealed = tuple(r.raw(32) for _ in range(r.u32()))
        rec.transcript = r.raw(32) if flag() else None
        rec.signature = r.raw(64) if flag() else None
        rec.own_sketch = r.array(round_sketch_shape(params)) if flag() else None
        rec.proposal = _Proposal.from_bytes(params, r.blob(1 << 40)) if flag() else None
        rec.vector = r.raw(32) if flag() else None
        rec.shared = flag()
        rec.reproposals = r.u8()
        if rec.reproposals > MAX_REPROPOSALS:
            raise CryptoFormatError("local round record: re-proposal count out of range")
        return rec


class ClientRoundSteps:
    """Round steps of :class:`ClientEpoch` (mixed in; the state lives on the epoch object)."""

    def _record(self: ClientEpoch, number: int) -> RoundRecord:
        return self.rounds.setdefault(number, RoundRecord())

    # ---- U1 ----
    def upload(self: ClientEpoch, round_number: int, values: np.ndarray, weight: float = 1.0, *,
               keep_own_c1: bool = True, examples: int = 0, context: bytes = bytes(32)) -> bytes:
        """U1: encrypt ``values`` (already multiplied by ``weight`` for FedAvg) under the verified key; return the
        upload (with its signed commitment), or in malicious-colluding the signed commitment alone.

        ``examples``: the example count behind ``weight`` (``weight = examples / norm``). Declared, it makes this
        client refuse an upload set whose weights are not one common multiple of the declared counts: a server that
        sends each client its own norm could otherwise weight one update 1 and the rest ~0, and decrypt it alone.
        ``context``: a 32-byte digest of what the update was computed from (the global model). Declared (non-zero),
        it makes this client refuse an upload set whose members declare another: a server that sends the others a
        model whose updates vanish would otherwise decrypt this client's update alone (model inconsistency).

        ``keep_own_c1=False`` (malicious): do not keep this client's c1 for its sketch; the server's proposal then
        brings it back (``ServerRound.proposal(for_member=...)``) and the client checks it against its commitment.
        A constrained node or one whose state travels between processes keeps its state small this way."""
        self._require("ready")
        if not 0 <= round_number < 2**63 or not (np.isfinite(weight) and weight >= 0):
            raise VerificationError("round number or weight out of range")
        if isinstance(examples, bool) or not isinstance(examples, (int, np.integer)) or not 0 <= examples < 2**32:
            raise VerificationError("example count out of range")
        if not isinstance(context, bytes) or len(context) != 32:
            raise VerificationError("the update's context digest must be 32 bytes")
        rec = self._record(round_number)
        if rec.commitment is not None:
            raise ReplayError(f"already uploaded for round {round_number}")
        flat, bound = check_values(self.params, values, len(self.members))
        data = scheme.encrypt(self.params, self.encryptor, flat)
        c0d, c1d = component_digests(data)
        c = UploadCommitment(self.epoch, round_number, self.index, int(flat.size), bound, float(weight), c0d, c1d,
                             examples=int(examples), context=context)
        if self.identity is not None:
            c = c.signed(self.identity)
        rec.commitment = c
        rec.vector = hash_parts(b"update-vector", np.ascontiguousarray(flat, dtype="<f8").tobytes())
        if self.threat is ThreatModel.MALICIOUS_COLLUDING:
            rec.own = data
            return commitment_to_bytes(self.params, c)
        keep = self.threat is ThreatModel.MALICIOUS and keep_own_c1
        rec.own = np.ascontiguousarray(data[:, 1]) if keep else None
        return Upload(c, data).to_bytes(self.params)

    def prepare_smudging(self: ClientEpoch, round_number: int, uploads: int | None = None) -> None:
        """Sample this round's flood ahead of time (while waiting for the aggregate); optional."""
        rec = self._record(round_number)
        if rec.commitment is None:
            raise ProtocolStateError("prepare_smudging needs this client's own upload of the round")
        k = -(-rec.commitment.length // self.params.floats_per_ciphertext)
        from .flood import sample_flood

        bits = self.params.flood_bits(len(self.members), uploads or len(self.members), k)
        self.key._prepared.append((bits, sample_flood(self.params, bits, k)))

    # ---- U2 (malicious-colluding) ----
    def on_commitment_list(self: ClientEpoch, data: bytes) -> bytes:
        """U2: reveal the ciphertexts only once every commitment of the round is fixed and signed."""
        if self.threat is not ThreatModel.MALICIOUS_COLLUDING:
            raise ProtocolStateError("only malicious-colluding has a commitment list")
        self._require("ready")
        lst = CommitmentList.from_bytes(self.params, data)
        rec = self._record(lst.round_number)
        if rec.commitment is None or rec.own is None:
            raise ProtocolStateError("no upload of this client to reveal in this round")
        self._check_commitments(lst.round_number, tuple(c.member for c in lst.commitments), lst.commitments)
        digests = tuple(c.digest for c in lst.commitments)
        if rec.commitment.digest not in digests:
            raise VerificationError("the commitment list does not contain this client's commitment")
        if rec.revealed is not None and rec.revealed != digests:
            raise ReplayError("already revealed against another commitment list for this round")
        rec.revealed = digests
        return Upload(rec.commitment, rec.own).to_bytes(self.params)

    def _check_commitments(self: ClientEpoch, round_number: int, uploads: tuple[int, ...],
                           commitments: tuple[UploadCommitment, ...]) -> None:
        if list(uploads) != sorted(set(uploads)) or any(not 0 <= i < len(self.members) for i in uploads):
            raise VerificationError("upload set is not a sorted set of epoch members")
        if len(uploads) < self.policy.min_uploads:
            raise VerificationError(f"upload set of {len(uploads)} is below the minimum of {self.policy.min_uploads}")
        lengths = {c.length for c in commitments}
        for i, c in zip(uploads, commitments):
            if c.member != i or c.round_number != round_number or not hmac.compare_digest(c.epoch, self.epoch):
                raise VerificationError("a commitment belongs to another member, round or epoch")
            if self.threat.signed and not c.valid(self.members[i].verification_key):
                raise VerificationError("a commitment carries an invalid signature")
        if len(lengths) != 1:
            raise VerificationError("commitments of different lengths in one round")
        own = self.rounds.get(round_number)
        mine = None if own is None else own.commitment
        if mine is not None and mine.context != bytes(32) and any(
                not hmac.compare_digest(c.context, mine.context) for c in commitments):
            raise VerificationError("a member of the upload set computed its update from another model (a model "
                                    "sent only to some members would isolate the others' updates)")
        if mine is not None and mine.examples > 0:  # FedAvg weights: one common norm for every member of U
            scale = mine.weight / mine.examples
            if any(c.examples < 1 or not math.isclose(c.weight, scale * c.examples, rel_tol=1e-9, abs_tol=1e-300)
                   for c in commitments):
                raise VerificationError("the committed weights are not one common multiple of the declared example "
                                        "counts (a per-member weight would isolate an update)")

    # ---- D1 ----
    def on_round_proposal(self: ClientEpoch, data: bytes) -> bytes:
        """D1: check U and the commitments; honest-but-curious returns the share at once, otherwise the signed
        transcript (malicious: with a sketch of the client's own c1)."""
        self._require("ready")
        prop = RoundProposal.from_bytes(self.params, data)
        rec = self._record(prop.round_number)
        self._check_commitments(prop.round_number, prop.uploads, prop.commitments)
        if prop.commitments[0].length != prop.length:
            raise VerificationError("proposal length differs from the committed length")
        own_pos = prop.uploads.index(self.index) if self.index in prop.uploads else None
        if own_pos is not None and (rec.commitment is None or prop.commitments[own_pos] != rec.commitment):
            raise VerificationError("this client's own commitment is missing from the upload set or altered")
        if self.threat is ThreatModel.MALICIOUS_COLLUDING and own_pos is not None:
            if rec.revealed is None or not set(c.digest for c in prop.commitments) <= set(rec.revealed):
                raise VerificationError("the upload set holds a commitment fixed after this client revealed")
        k = -(-prop.length // self.params.floats_per_ciphertext)
        self.key.check_share_allowed(prop.round_number, [prop.aggregate_digest])
        if self.threat is ThreatModel.HONEST_BUT_CURIOUS:
            if prop.c1 is None or not hmac.compare_digest(aggregate_digest_of(prop.c1), prop.aggregate_digest):
                raise VerificationError("proposal without its aggregate C1, or with the wrong digest")
            t = round_transcript(self.epoch, prop.round_number, prop.length, k, prop.uploads,
                                 [c.digest for c in prop.commitments], prop.aggregate_digest)
            return self._share(rec, prop, t, prop.c1)
        t = round_transcript(self.epoch, prop.round_number, prop.length, k, prop.uploads,
                             [c.digest for c in prop.commitments], prop.aggregate_digest)
        again = rec.transcript is not None and rec.transcript != t
        if again:
            self._check_reproposal(rec, prop)
        if own_pos is not None:
            self._check_same_update(prop.round_number, rec, prop.uploads)
        own_sketch = None
        if self.threat is ThreatModel.MALICIOUS and own_pos is not None:
            own_c1 = rec.own if rec.own is not None else prop.own_c1
            if own_c1 is None or not hmac.compare_digest(digest(b"c1", np.ascontiguousarray(own_c1)),
                                                         rec.commitment.c1_digest):  # type: ignore[union-attr]
                raise VerificationError("this client's own c1 is unavailable or does not match its commitment")
            own_sketch = sketch(own_c1, self.params.data_primes, round_challenge(t))
        if self.identity is None:
            raise ProtocolStateError("no epoch signing key in a signed threat model")
        sig = self.identity.sign(b"transcript", transcript_signature_message(
            t, b"" if own_sketch is None else sketch_bytes(own_sketch)))
        rec.transcript, rec.proposal, rec.signature, rec.own_sketch = t, prop, sig, own_sketch
        rec.reproposals += int(again)
        if self.threat is ThreatModel.MALICIOUS:
            rec.own = None  # the sketch is made: the client's c1 is not needed any more
        return TranscriptSignature(self.index, t, own_sketch, sig).to_bytes(self.params)

    def _check_reproposal(self: ClientEpoch, rec: RoundRecord, prop: RoundProposal) -> None:
        """A second transcript for one round: only malicious t-of-n, before this member gave any share of the round,
        a strict subset of the upload set it signed last (same commitments), at most ``MAX_REPROPOSALS`` times."""
        old = rec.proposal
        if self.threshold is None or self.threat is not ThreatModel.MALICIOUS or old is None:
            raise ReplayError(f"already signed another transcript for round {prop.round_number}")
        if rec.shared or self.threshold.has_answered(prop.round_number):
            raise ReplayError(f"already gave a decryption share in round {prop.round_number}: its upload set is fixed")
        if rec.reproposals >= MAX_REPROPOSALS:
            raise ReplayError(f"round {prop.round_number} was already re-proposed {MAX_REPROPOSALS} times: refused")
        kept = dict(zip(old.uploads, old.commitments))
        if prop.length != old.length or not set(prop.uploads) < set(kept):
            raise ReplayError(f"already signed another transcript for round {prop.round_number}; a re-proposal must "
                              "be a strict subset of that upload set")
        if any(not hmac.compare_digest(kept[i].digest, c.digest) for i, c in zip(prop.uploads, prop.commitments)):
            raise VerificationError("a re-proposal changed a commitment of the upload set signed before")

    def _check_same_update(self: ClientEpoch, round_number: int, rec: RoundRecord, uploads: tuple[int, ...]) -> None:
        """Refuse to offer an update already signed into another round under a different upload set: the two sums
        would differ by the other members' updates alone (a retried round that drops one member isolates it)."""
        for number, other in self.rounds.items():
            if number != round_number and other.vector == rec.vector and other.proposal is not None:
                if other.proposal.uploads != uploads:
                    raise ReplayError("this update was already signed into another round with a different upload set")

    # ---- D2 ----
    def decrypting_set(self: ClientEpoch) -> tuple[int, ...]:
        """Members whose signatures a share needs: all of them (N-of-N; t-of-n: see ``_required_signers``)."""
        return tuple(range(len(self.members)))

    def _required_signers(self: ClientEpoch, conf: RoundConfirmation, prop: RoundProposal) -> set[int]:
        """N-of-N: every member. t-of-n: the decrypting set S (``t`` members, this one among them) and, in
        malicious, every member of U (their sketches vouch for C1)."""
        if self.threshold is None:
            if conf.attempt != 0 or conf.decrypting:
                raise VerificationError("a decrypting set in an epoch without t-of-n decryption")
            return set(self.decrypting_set())
        check_decrypting_set(conf.decrypting, self.threshold.t, len(self.members))
        if self.index not in conf.decrypting:
            raise VerificationError("this member is not in the round's decrypting set: no share")
        need = set(conf.decrypting)
        return need | set(prop.uploads) if self.threat is ThreatModel.MALICIOUS else need

    def on_round_confirmation(self: ClientEpoch, data: bytes) -> bytes:
        """D2: every member of the decrypting set signed the same transcript and C1 checks out -> the share."""
        self._require("ready")
        conf = RoundConfirmation.from_bytes(self.params, data)
        rec = self._record(conf.round_number)
        if rec.transcript is None or rec.proposal is None:
            raise ProtocolStateError("no signed transcript of this client for that round")
        prop, t = rec.proposal, rec.transcript
        signers = {s.member: s for s in conf.signatures}
        need = self._required_signers(conf, prop)
        exact = self.threshold is None
        if len(signers) != len(conf.signatures) or any(not 0 <= i < len(self.members) for i in signers) or \
                (set(signers) != need if exact else not need <= set(signers)):
            raise VerificationError("the confirmation must hold exactly one signature per member of the decrypting set")
        sketches = []
        for i, s in signers.items():
            in_u = i in prop.uploads
            if not hmac.compare_digest(s.transcript, t):
                raise VerificationError(f"member {i} signed a different transcript (equivocation): refused")
            wants_sketch = self.threat is ThreatModel.MALICIOUS and in_u
            if (s.sketch is not None) != wants_sketch:
                raise VerificationError("sketch missing for a member of U, or present for a non-member")
            msg = transcript_signature_message(t, b"" if s.sketch is None else sketch_bytes(s.sketch))
            if not verify(self.members[i].verification_key, b"transcript", msg, s.signature):
                raise VerificationError(f"member {i}'s transcript signature is invalid")
            if s.sketch is not None:
                sketches.append(s.sketch)
        mine = signers[self.index]
        if rec.own_sketch is not None and (mine.sketch is None or not np.array_equal(mine.sketch, rec.own_sketch)):
            raise VerificationError("this client's own sketch was altered")
        if self.threat is ThreatModel.MALICIOUS:
            if conf.c1 is None or not hmac.compare_digest(aggregate_digest_of(conf.c1), prop.aggregate_digest):
                raise VerificationError("the confirmation's C1 is not the one the transcript binds")
            if not np.array_equal(sketch_sum(sketches, self.params.data_primes),
                                  sketch(conf.c1, self.params.data_primes, round_challenge(t))):
                raise VerificationError("C1 is not the sum of the signed uploads (sketch check failed): refused")
            c1 = conf.c1
        else:
            if len(conf.components) != len(prop.uploads):
                raise VerificationError("the confirmation must carry the c1 of every upload in U")
            for comp, c in zip(conf.components, prop.commitments):
                if not hmac.compare_digest(digest(b"c1", np.ascontiguousarray(comp)), c.c1_digest):
                    raise VerificationError("a c1 does not match its owner's signed commitment")
            c1 = sum_mod(conf.components, self.params.data_primes)
            if not hmac.compare_digest(aggregate_digest_of(c1), prop.aggregate_digest):
                raise VerificationError("the sum of the committed c1 is not the aggregate the transcript binds")
        if self.threshold is not None:
            return self._threshold_share(rec, prop, t, c1, conf.attempt, conf.decrypting)
        return self._share(rec, prop, t, c1)

    def _threshold_share(self: ClientEpoch, rec: RoundRecord, prop: RoundProposal, t: bytes, c1: np.ndarray,
                         attempt: int, decrypting: tuple[int, ...]) -> bytes:
        """t-of-n: the share on this attempt's re-randomised aggregate ``C1 + u_a a`` (u_a from the transcript and
        the attempt: the client computes it itself), Lagrange coefficient of S applied here, then fresh smudging."""
        a = scheme.crs_polynomial(self.params, self.opening.crs)
        c1_a = attempt_aggregate(self.params, c1, a, t, attempt)
        data = self.threshold.decryption_share(  # type: ignore[union-attr]
            self.params, self.key, prop.round_number, attempt, c1_a, decrypting, self.index, len(self.members),
            len(prop.uploads), transcript=t)
        rec.shared = True
        return RoundShare(self.index, prop.round_number, decryption_transcript(t, attempt, decrypting),
                          data).to_bytes(self.params)

    def _share(self: ClientEpoch, rec: RoundRecord, prop: RoundProposal, t: bytes, c1: np.ndarray) -> bytes:
        self.key.check_share_allowed(prop.round_number, [prop.aggregate_digest])
        self.key.record_share(prop.round_number, [prop.aggregate_digest])
        rec.shared = True
        data = self.key.partial_decrypt(c1, len(self.members), len(prop.uploads))
        return RoundShare(self.index, prop.round_number, t, data).to_bytes(self.params)

