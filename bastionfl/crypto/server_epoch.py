"""Server side of a key epoch, driven by bytes (public material only): open, collect, propose, confirm.

The server validates every reply (shape, signature, commitment) so that a faulty member is named early, but the
security of the clients never rests on these checks: each client verifies the roster and the key itself.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from .client_epoch import key_challenge, key_digest_of, share_purpose
from .commitment import MemberEntry
from .crs import CrsSeed
from .epoch_messages import (
    EpochConfirmation,
    EpochOpening,
    EpochProposal,
    KeyResponse,
    KeySetupReply,
)
from .errors import ProtocolStateError, RosterError, VerificationError
from .identity import verify
from .params import Params
from .polyarith import digest, sum_mod
from .sketch import sketch, sketch_bytes, sketch_sum
from .threat import ThreatModel
from .threshold import ThresholdRule, exchange_message, threshold_transcript
from .share_relay import ShareRelay
from .threshold_messages import ShareDealing
from .transcript import epoch_digest, epoch_transcript, key_sketch_message

if TYPE_CHECKING:
    from .server_round import ServerRound


class ServerEpoch:
    """The server's view of one key epoch: members, aggregated key, epoch digest."""

    def __init__(self, params: Params, threat: ThreatModel, crs: CrsSeed, threshold: ThresholdRule | None = None) -> None:
        self.params = params
        self.threat = ThreatModel.parse(threat)
        if threshold is not None and not self.threat.signed:
            raise VerificationError("t-of-n decryption needs a signed threat model (malicious or malicious-colluding)")
        self.crs = crs
        self.rule = threshold
        self.threshold: int | None = None  # t, once the roster is fixed
        self._relay: ShareRelay | None = None  # t-of-n: the sealed boxes, laid out per recipient as they arrive
        self.opening = EpochOpening(self.threat, crs, threshold)
        self._opening_digest = self.opening.digest(params)
        self._replies: dict[bytes, KeySetupReply] = {}
        self.members: tuple[MemberEntry, ...] = ()
        self.b_tilde: np.ndarray | None = None
        self.transcript = b""
        self.key_digest = b""
        self.epoch = b""
        self._responses: dict[int, KeyResponse] = {}
        self.stage = "collecting"

    @classmethod
    def open(cls, params: Params, threat: ThreatModel | str, run_id: str, epoch: int,
             threshold: ThresholdRule | None = None) -> tuple[ServerEpoch, bytes]:
        """K0: a new epoch with the CRS of (run id, epoch) and the t-of-n rule (None: every member decrypts);
        returns the opening every client receives."""
        srv = cls(params, ThreatModel.parse(threat), CrsSeed.from_session(run_id, epoch), threshold)
        return srv, srv.opening.to_bytes(params)

    def add_key_reply(self, data: bytes) -> bytes:
        """K1: validate and keep one member's reply; returns its verification key (honest-but-curious: digest)."""
        self._require("collecting")
        reply = KeySetupReply.from_bytes(self.params, data)
        if reply.threat_model is not self.threat:
            raise VerificationError("key setup reply of another threat model")
        entry = reply.entry
        colluding = self.threat is ThreatModel.MALICIOUS_COLLUDING
        if (reply.b is None) != colluding:
            raise VerificationError("key setup reply carries (or lacks) the public share against the threat model")
        if reply.b is not None and not hmac.compare_digest(digest(b"public-share", reply.b), entry.share_digest):
            raise VerificationError("key setup reply: share digest does not match the share")
        if self.threat.signed and not entry.valid(self._opening_digest, share_purpose(self.threat)):
            raise VerificationError("key setup reply: invalid signature")
        if (reply.exchange is None) != (self.rule is None):
            raise VerificationError("key setup reply carries (or lacks) an exchange key against the threshold rule")
        if reply.exchange is not None and not verify(entry.verification_key, b"exchange-key", exchange_message(
                self._opening_digest, entry.verification_key, reply.exchange[0]), reply.exchange[1]):
            raise VerificationError("key setup reply: exchange key badly signed")
        name = entry.verification_key if self.threat.signed else entry.share_digest
        if name in self._replies or any(r.entry.share_digest == entry.share_digest for r in self._replies.values()):
            raise VerificationError("a member replied twice")
        self._replies[name] = reply
        return name

    def proposal(self, members: Iterable[bytes] | None = None) -> bytes:
        """K2: the roster (optionally restricted to the certified verification keys) and, except in
        malicious-colluding, the aggregated key. Honest-but-curious epochs are ready after this step."""
        self._require("collecting")
        names = sorted(self._replies) if members is None else sorted(set(bytes(m) for m in members))
        if not names or any(n not in self._replies for n in names):
            raise RosterError("the roster names a member without a key setup reply")
        replies = [self._replies[n] for n in names]
        self.members = tuple(r.entry for r in replies)
        self.transcript = epoch_transcript(self._opening_digest,
                                           [(m.verification_key, m.share_digest) for m in self.members])
        exchange = None
        if self.rule is not None:
            exchange = tuple(r.exchange for r in replies)  # type: ignore[misc]
            self.threshold = self.rule.threshold_for(len(self.members))
            self.transcript = threshold_transcript(self.transcript, self.threshold, [x for x, _ in exchange])
        if self.threat is not ThreatModel.MALICIOUS_COLLUDING:
            self.b_tilde = sum_mod((r.b for r in replies), self.params.key_primes)  # type: ignore[misc]
            self.key_digest = key_digest_of(self.b_tilde)
        self.stage = "proposed"
        if self.threat is ThreatModel.HONEST_BUT_CURIOUS:
            self._ready()
        return EpochProposal(self.threat, self.crs, self.members, self.b_tilde, exchange).to_bytes(self.params)

    def add_key_response(self, data: bytes) -> int:
        """K2 reply: a member's signed key sketch (malicious) or revealed share (malicious-colluding)."""
        self._require("proposed")
        resp = KeyResponse.from_bytes(self.params, data)
        i = resp.member
        if not 0 <= i < len(self.members) or i in self._responses:
            raise VerificationError("key response of an unknown member, or a second one")
        m = self.members[i]
        if self.threat is ThreatModel.MALICIOUS:
            if resp.sketch is None or not verify(m.verification_key, b"key-sketch", key_sketch_message(
                    self.transcript, self.key_digest, sketch_bytes(resp.sketch)), resp.signature):
                raise VerificationError(f"member {i}: key sketch missing or badly signed")
        elif resp.b is None or not hmac.compare_digest(digest(b"public-share", resp.b), m.share_digest):
            raise VerificationError(f"member {i}: revealed share does not match its commitment")
        self._responses[i] = resp
        return i

    def add_dealing(self, data: bytes) -> int:
        """T1 (with the K2 reply): a member's sealed shares, one box per other member (forwarded, never opened)."""
        if self.threshold is None or self.stage == "collecting":
            raise ProtocolStateError("share dealings are taken in a t-of-n epoch after its roster is fixed")
        d = ShareDealing.from_bytes(self.params, data, copy=False)  # each box is copied once, by the relay
        n = len(self.members)
        if self._relay is None:
            self._relay = ShareRelay(self.params, n)
        if not 0 <= d.member < n or d.member in self._relay.dealers:
            raise VerificationError("share dealing of an unknown member, or a second one")
        if [k for k, _ in d.boxes] != [k for k in range(n) if k != d.member]:
            raise VerificationError(f"member {d.member}: the dealing must hold one box per other member")
        self._relay.add(d.member, d.boxes)
        return d.member

    @property
    def missing_dealings(self) -> list[int]:
        """Members whose share dealing has not arrived (t-of-n only)."""
        if self.threshold is None:
            return []
        dealers = self._relay.dealers if self._relay is not None else set()
        return [i for i in range(len(self.members)) if i not in dealers]

    def dealt_shares(self, member: int) -> bytes:
        """T2: every box addressed to ``member``; needs every member's dealing."""
        self._dealt_ready()
        if not 0 <= member < len(self.members):
            raise ProtocolStateError(f"no member {member} in this epoch")
        return self._relay.peek(member)  # type: ignore[union-attr]

    def take_dealt_shares(self) -> dict[int, bytes]:
        """T2 for every member at once, each recipient's buffer released as its message's bytes are made: the server
        holds the ``n(n - 1)`` boxes once, never twice over (the epoch keeps none afterwards)."""
        self._dealt_ready()
        return self._relay.take_all()  # type: ignore[union-attr]

    def _dealt_ready(self) -> None:
        if self.threshold is None:
            raise ProtocolStateError("shares are dealt in a t-of-n epoch only")
        if self.missing_dealings:
            raise ProtocolStateError(f"share dealings missing from members {self.missing_dealings}")
        if self._relay is None or self._relay.handed_out:
            raise ProtocolStateError("the dealt shares were already handed out (take_dealt_shares)")

    @property
    def missing(self) -> list[int]:
        """Members whose key response has not arrived."""
        return [i for i in range(len(self.members)) if i not in self._responses]

    def confirmation(self) -> bytes:
        """K3: every member's response; the epoch is ready (clients check the key themselves)."""
        self._require("proposed")
        if self.missing:
            raise ProtocolStateError(f"key responses missing from members {self.missing}")
        responses = tuple(self._responses[i] for i in range(len(self.members)))
        if self.threat is ThreatModel.MALICIOUS:
            if self.b_tilde is None:
                raise ProtocolStateError("no aggregated key to confirm")
            ck = key_challenge(self.transcript, self.key_digest)
            total = sketch_sum([r.sketch for r in responses], self.params.key_primes)  # type: ignore[misc]
            if not np.array_equal(total, sketch(self.b_tilde[None], self.params.key_primes, ck)):
                raise VerificationError("members' key sketches do not sum to the aggregated key")
        else:
            self.b_tilde = sum_mod((r.b for r in responses), self.params.key_primes)  # type: ignore[misc]
            self.key_digest = key_digest_of(self.b_tilde)
        self._ready()
        return EpochConfirmation(responses).to_bytes(self.params)

    def _ready(self) -> None:
        self.epoch = epoch_digest(self.transcript, self.key_digest)
        self.stage = "ready"

    def _require(self, stage: str) -> None:
        if self.stage != stage:
            raise ProtocolStateError(f"this step needs the epoch in stage {stage!r}; it is {self.stage!r}")

    def new_round(self, round_number: int) -> ServerRound:
        """A round of this (ready) epoch."""
        from .server_round import ServerRound

        self._require("ready")
        return ServerRound(self, round_number)

    def __repr__(self) -> str:
        return f"ServerEpoch(threat={self.threat.value!r}, stage={self.stage!r}, members={len(self.members)})"
