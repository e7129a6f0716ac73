"""Server side of a round, driven by bytes: collect uploads (or commitments then reveals), propose the round,
collect transcript signatures, confirm, collect shares, fuse with a range check. Public material only."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

import numpy as np

from .client_round import aggregate_digest_of
from .commitment import UploadCommitment
from .decryption import decode_checked
from .errors import IncompleteShareSetError, ProtocolStateError, VerificationError
from .identity import verify
from .polyarith import add_mod_inplace, sub_mod
from .round_messages import (
    CommitmentList,
    RoundConfirmation,
    RoundProposal,
    RoundShare,
    TranscriptSignature,
    Upload,
    commitment_from_bytes,
)
from .sketch import sketch_bytes
from .threat import ThreatModel
from .threshold import (
    MAX_REPROPOSALS,
    attempt_aggregate,
    check_attempt,
    check_decrypting_set,
    decryption_transcript,
)
from .transcript import round_transcript, transcript_signature_message

if TYPE_CHECKING:
    from .server_epoch import ServerEpoch


class ServerRound:
    """One round of a ready epoch, as the server runs it."""

    def __init__(self, epoch: ServerEpoch, round_number: int) -> None:
        if not 0 <= round_number < 2**63:
            raise VerificationError("round number out of range")
        self.epoch = epoch
        self.params = epoch.params
        self.threat = epoch.threat
        self.round_number = round_number
        self.commitments: dict[int, UploadCommitment] = {}
        self._frozen: tuple[int, ...] | None = None  # colluding: the commitment list sent to the clients
        self._sum: np.ndarray | None = None
        self._c1: dict[int, np.ndarray] = {}
        self._c0: dict[int, np.ndarray] = {}  # malicious t-of-n: each c0 until decryption starts (re-proposals)
        self.reproposals = 0
        self.transcript = b""
        self._proposal: RoundProposal | None = None
        self._signatures: dict[int, TranscriptSignature] = {}
        self._shares: dict[int, np.ndarray] = {}
        self.attempt = 0  # t-of-n: the decryption attempt in flight, its decrypting set S and what shares answer
        self.decrypting: tuple[int, ...] = ()
        self._answer = b""
        self._attempts: set[int] = set()

    # ---- U1 / U2 ----
    def _check(self, c: UploadCommitment) -> None:
        if not 0 <= c.member < len(self.epoch.members):
            raise VerificationError("commitment of an unknown member")
        if c.round_number != self.round_number or not hmac.compare_digest(c.epoch, self.epoch.epoch):
            raise VerificationError("commitment of another round or epoch")
        if self.threat.signed and not c.valid(self.epoch.members[c.member].verification_key):
            raise VerificationError(f"member {c.member}: commitment badly signed")
        if any(o.length != c.length for o in self.commitments.values() if o.member != c.member):
            raise VerificationError("commitment length differs from the round's")

    def add_commitment(self, data: bytes) -> int:
        """U1 (malicious-colluding): a member's signed commitment; returns its member index."""
        if self.threat is not ThreatModel.MALICIOUS_COLLUDING or self._frozen is not None:
            raise ProtocolStateError("commitments are collected only in malicious-colluding, before the list")
        c = commitment_from_bytes(self.params, data)
        self._check(c)
        if c.member in self.commitments:
            raise VerificationError(f"member {c.member} committed twice")
        self.commitments[c.member] = c
        return c.member

    def commitment_list(self) -> bytes:
        """U2: freeze and broadcast every commitment received; only these may be revealed."""
        if self.threat is not ThreatModel.MALICIOUS_COLLUDING:
            raise ProtocolStateError("only malicious-colluding has a commitment list")
        self._frozen = tuple(sorted(self.commitments))
        return CommitmentList(self.round_number, tuple(self.commitments[i] for i in self._frozen)).to_bytes(self.params)

    def add_upload(self, data: bytes) -> int:
        """U1 (or the reveal): check the upload against its commitment and add it to the sum; returns the member."""
        if self._proposal is not None:
            raise ProtocolStateError("the round was already proposed")
        up = Upload.from_bytes(self.params, data)
        c = up.commitment
        if self.threat is ThreatModel.MALICIOUS_COLLUDING:
            if self._frozen is None or c.member not in self._frozen or self.commitments[c.member] != c:
                raise VerificationError("reveal of a commitment that is not in the round's list")
        else:
            self._check(c)
            if c.member in self.commitments:
                raise VerificationError(f"member {c.member} uploaded twice")
        if c.member in self._c1:
            raise VerificationError(f"member {c.member} revealed twice")
        if not c.matches(up.data):
            raise VerificationError(f"member {c.member}: ciphertexts do not match the commitment")
        self.params.check_sum_fits(1, sum(self.commitments[i].bound for i in self._c1) + c.bound)
        self.commitments[c.member] = c
        if self._sum is None:
            self._sum = np.array(up.data, dtype=np.uint64, copy=True)
        else:
            add_mod_inplace(self._sum, up.data, self.params.data_primes)
        self._c1[c.member] = np.ascontiguousarray(up.data[:, 1])
        if self._may_repropose:
            self._c0[c.member] = np.ascontiguousarray(up.data[:, 0])
        return c.member

    @property
    def _may_repropose(self) -> bool:
        return self.epoch.threshold is not None and self.threat is ThreatModel.MALICIOUS and not self._attempts

    def repropose(self, dropped: tuple[int, ...] | list[int]) -> None:
        """Malicious t-of-n: members of U that did not sign leave U; the sum loses their ciphertexts and the next
        ``proposal`` is for U' (strictly smaller). Only before any decryption attempt, at most ``MAX_REPROPOSALS``
        times; the members check all this themselves and give shares for one upload set per round."""
        gone = sorted(set(dropped))
        if not self._may_repropose or self._proposal is None or self._sum is None:
            raise ProtocolStateError("a re-proposal needs malicious t-of-n, a proposal and no decryption attempt")
        if not gone or any(i not in self._c1 for i in gone) or len(gone) >= len(self._c1):
            raise VerificationError("a re-proposal drops one or more members of U, and not all of them")
        if self.reproposals >= MAX_REPROPOSALS:
            raise ProtocolStateError(f"round {self.round_number} was already re-proposed {MAX_REPROPOSALS} times")
        for i in gone:
            dropped_upload = np.stack([self._c0.pop(i), self._c1.pop(i)], axis=1)
            self._sum = sub_mod(self._sum, dropped_upload, self.params.data_primes)
        self.reproposals += 1
        self._proposal, self.transcript, self._signatures, self._shares = None, b"", {}, {}

    # ---- D1 ----
    @property
    def uploads(self) -> tuple[int, ...]:
        """The upload set U: members whose ciphertexts are in the sum."""
        return tuple(sorted(self._c1))

    def proposal(self, for_member: int | None = None) -> bytes:
        """D1: the same proposal for every member (``for_member`` adds that member's own c1, for a client that did
        not keep it: malicious only)."""
        if self._sum is None:
            raise ProtocolStateError("no upload in this round")
        if self._proposal is None:
            u = self.uploads
            cs = tuple(self.commitments[i] for i in u)
            c1 = np.ascontiguousarray(self._sum[:, 1])
            length = cs[0].length
            agg = aggregate_digest_of(c1)
            k = c1.shape[0]
            self.transcript = round_transcript(self.epoch.epoch, self.round_number, length, k, u,
                                               [c.digest for c in cs], agg)
            hbc = self.threat is ThreatModel.HONEST_BUT_CURIOUS
            self._proposal = RoundProposal(self.round_number, length, u, cs, agg, c1 if hbc else None)
        prop = self._proposal
        if for_member is not None and self.threat is ThreatModel.MALICIOUS and for_member in self._c1:
            prop = RoundProposal(prop.round_number, prop.length, prop.uploads, prop.commitments,
                                 prop.aggregate_digest, None, self._c1[for_member])
        return prop.to_bytes(self.params)

    def add_signature(self, data: bytes) -> int:
        """D1 reply: a member's signature on the round transcript (checked here to name a faulty member early)."""
        if self._proposal is None or self.threat is ThreatModel.HONEST_BUT_CURIOUS:
            raise ProtocolStateError("no transcript to sign in this round")
        s = TranscriptSignature.from_bytes(self.params, data)
        i = s.member
        if not 0 <= i < len(self.epoch.members) or i in self._signatures:
            raise VerificationError("transcript signature of an unknown member, or a second one")
        wants_sketch = self.threat is ThreatModel.MALICIOUS and i in self._c1
        msg = transcript_signature_message(self.transcript, b"" if s.sketch is None else sketch_bytes(s.sketch))
        if (not hmac.compare_digest(s.transcript, self.transcript) or (s.sketch is not None) != wants_sketch
                or not verify(self.epoch.members[i].verification_key, b"transcript", msg, s.signature)):
            raise VerificationError(f"member {i}: transcript signature does not match this round")
        self._signatures[i] = s
        return i

    @property
    def signers(self) -> tuple[int, ...]:
        """Members whose transcript signature arrived."""
        return tuple(sorted(self._signatures))

    def confirmation(self, attempt: int = 0, decrypting: tuple[int, ...] | None = None) -> bytes:
        """D2: every member's signature, with C1 (malicious) or every c1 of U (malicious-colluding). t-of-n: the
        signatures that arrived (all of U's in malicious), attempt ``attempt`` and its decrypting set S (``t``
        signers; by default the first ``t``). A retry is a new attempt with a new S."""
        if self.epoch.threshold is not None:
            return self._threshold_confirmation(attempt, decrypting)
        missing = [i for i in range(len(self.epoch.members)) if i not in self._signatures]
        if self._proposal is None or missing:
            raise IncompleteShareSetError(f"transcript signatures missing from members {missing}")
        if self._sum is None:
            raise ProtocolStateError("no upload in this round")
        sigs = tuple(self._signatures[i] for i in range(len(self.epoch.members)))
        if self.threat is ThreatModel.MALICIOUS:
            conf = RoundConfirmation(self.round_number, self._proposal.length, sigs,
                                     np.ascontiguousarray(self._sum[:, 1]))
        else:
            conf = RoundConfirmation(self.round_number, self._proposal.length, sigs,
                                     components=tuple(self._c1[i] for i in self.uploads))
        return conf.to_bytes(self.params)

    def _threshold_confirmation(self, attempt: int, decrypting: tuple[int, ...] | None) -> bytes:
        t = self.epoch.threshold
        if self._proposal is None or self._sum is None or t is None:
            raise ProtocolStateError("no proposal was made in this round")
        signers = self.signers
        if self.threat is ThreatModel.MALICIOUS and any(i not in self._signatures for i in self.uploads):
            missing = [i for i in self.uploads if i not in self._signatures]
            raise IncompleteShareSetError(f"transcript signatures missing from members of U {missing}: their "
                                          "sketches vouch for C1")
        if decrypting is None:
            decrypting = signers[:t]
        if len(decrypting) < t or any(i not in self._signatures for i in decrypting):
            raise IncompleteShareSetError(f"{len(signers)} signer(s) available for a decrypting set of {t}: "
                                          "fewer than t, nothing is decrypted")
        check_decrypting_set(decrypting, t, len(self.epoch.members))
        if attempt in self._attempts:
            raise ProtocolStateError(f"decryption attempt {attempt} was already made in this round")
        check_attempt(attempt)
        self._attempts.add(attempt)
        self._c0 = {}  # decryption started: no re-proposal any more
        self.attempt, self.decrypting, self._shares = attempt, tuple(decrypting), {}
        self._answer = decryption_transcript(self.transcript, attempt, self.decrypting)
        sigs = tuple(self._signatures[i] for i in signers)
        if self.threat is ThreatModel.MALICIOUS:
            conf = RoundConfirmation(self.round_number, self._proposal.length, sigs,
                                     np.ascontiguousarray(self._sum[:, 1]), attempt=attempt,
                                     decrypting=self.decrypting)
        else:
            conf = RoundConfirmation(self.round_number, self._proposal.length, sigs,
                                     components=tuple(self._c1[i] for i in self.uploads), attempt=attempt,
                                     decrypting=self.decrypting)
        return conf.to_bytes(self.params)

    # ---- shares and fusion ----
    def add_share(self, data: bytes) -> int:
        """D2 reply (honest-but-curious: D1 reply): one member's decryption share for this round."""
        if self._proposal is None or self._sum is None:
            raise ProtocolStateError("no proposal was made in this round")
        s = RoundShare.from_bytes(self.params, data)
        if not 0 <= s.member < len(self.epoch.members) or s.member in self._shares:
            raise VerificationError("share of an unknown member, or a second one")
        threshold = self.epoch.threshold is not None
        if threshold and s.member not in self.decrypting:
            raise VerificationError(f"share of member {s.member}, outside the decrypting set of this attempt")
        answer = self._answer if threshold else self.transcript
        if s.round_number != self.round_number or not hmac.compare_digest(s.transcript, answer):
            raise VerificationError("share answers another round, transcript or attempt")
        if s.data.shape != self._sum[:, 0].shape:
            raise VerificationError("share of the wrong size")
        self._shares[s.member] = s.data
        return s.member

    def result(self) -> np.ndarray:
        """The decoded sum of U's updates; ``IncompleteShareSetError`` without every member's share,
        ``RangeCheckError`` if it exceeds the sum of the declared bounds."""
        threshold = self.epoch.threshold is not None
        needed = self.decrypting if threshold else tuple(range(len(self.epoch.members)))
        missing = [i for i in needed if i not in self._shares]
        if self._sum is None or self._proposal is None or missing or not needed:
            raise IncompleteShareSetError(f"decryption shares missing from members {missing or 'of S'}")
        bound = sum(self.commitments[i].bound for i in self.uploads)
        shares = [self._shares[i] for i in needed]
        c0 = self._sum[:, 0]
        if threshold:
            c0 = attempt_aggregate(self.params, c0, self.epoch.b_tilde, self.transcript, self.attempt)
        return decode_checked(self.params, c0, shares, self._proposal.length, bound,
                              len(self.epoch.members), len(self.uploads))

    @property
    def shares_used(self) -> int:
        """Shares the last result was (or will be) decoded from."""
        return len(self.decrypting) if self.epoch.threshold is not None else len(self.epoch.members)

    @property
    def total_weight(self) -> float:
        """Sum of the FedAvg weights the members of U committed to."""
        return float(sum(self.commitments[i].weight for i in self.uploads))

    def weighted_mean(self) -> np.ndarray:
        """FedAvg: the decoded sum divided by the committed weights of U."""
        total = self.total_weight
        if not total > 0:
            raise VerificationError("the upload set's total weight is not positive")
        return self.result() / total
