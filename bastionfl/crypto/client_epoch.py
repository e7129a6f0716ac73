"""Client side of a key epoch, driven by bytes: key setup (K1-K3), the verified aggregated key, local persistence.

honest-but-curious: K1 sends ``b_i``; K2 brings ``b~`` and the roster -> ready (the server's word).
malicious: K1 sends ``b_i``, a fresh Ed25519 verification key and a signature over both; K2 brings the roster
(every member's signed entry) and ``b~``: the client checks the roster and returns a signed sketch of its own
``b_i`` at a challenge derived from the roster and ``H(b~)``; K3 brings every member's signed sketch: ready only if
they sum to the sketch of ``b~`` and its own is unaltered.
malicious-colluding: K1 sends only a signed commitment ``H(b_i)``; K2 brings every signed commitment: the client
checks the roster and reveals ``b_i``; K3 brings every ``b_j``: each must match its commitment, and the client
sums them itself. No member can pick its share after seeing the others' (rogue key).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

import numpy as np

from . import scheme
from .client_round import ClientRoundSteps, RoundRecord
from .commitment import MemberEntry
from .epoch_messages import (
    EpochConfirmation,
    EpochOpening,
    EpochProposal,
    KeyResponse,
    KeySetupReply,
    key_sketch_shape,
)
from .errors import (
    CryptoFormatError,
    ProtocolStateError,
    RosterError,
    VerificationError,
)
from .identity import VK_BYTES, EpochIdentity, verify
from .keys import KeyShare, key_shape, read_crs, write_crs
from .params import Params
from .polyarith import digest, sum_mod
from .sketch import challenge_key, sketch, sketch_bytes, sketch_sum
from .threat import ClientPolicy, ThreatModel
from .threshold import ExchangeKey, ThresholdRule, exchange_message, threshold_transcript
from .threshold_member import ThresholdMember
from .transcript import epoch_digest, epoch_transcript, hash_parts, key_sketch_message
from .wire import Kind, Reader, Writer, open_envelope, seal

_STAGES = ("opened", "proposed", "ready")
NO_KEY = bytes(VK_BYTES)


def key_digest_of(b_tilde: np.ndarray) -> bytes:
    """Digest of the aggregated public key ``b~``."""
    return digest(b"aggregated-key", b_tilde)


def key_challenge(transcript: bytes, key_digest: bytes) -> bytes:
    """Challenge key of the aggregated-key sketch: fixed only once the roster and ``b~`` are."""
    return challenge_key(b"key", hash_parts(b"key-challenge", transcript, key_digest))


def share_purpose(threat: ThreatModel) -> bytes:
    """Signature purpose of a member entry: a share digest (malicious) or a commitment (malicious-colluding)."""
    return b"key-commit" if threat is ThreatModel.MALICIOUS_COLLUDING else b"key-share"


def check_roster(members: tuple[MemberEntry, ...], policy: ClientPolicy, certified: Iterable[bytes] | None,
                 signed: bool) -> None:
    """Sorted, distinct, at least ``min_members``, and exactly the certified keys when an authority gave them."""
    vks = [m.verification_key for m in members]
    digests = [m.share_digest for m in members]
    if len(members) < policy.min_members:
        raise RosterError(f"roster of {len(members)} members is below the minimum of {policy.min_members}")
    if len(set(digests)) != len(digests) or (signed and len(set(vks)) != len(vks)):
        raise RosterError("roster lists a member twice")
    order = vks if signed else digests
    if order != sorted(order):
        raise RosterError("roster is not in canonical order")
    if certified is not None:
        if not signed:
            raise RosterError("a certified roster needs signed members (a malicious threat model)")
        want = sorted(set(bytes(k) for k in certified))
        if sorted(vks) != want:
            raise RosterError("roster differs from the verification keys the authority certified for this epoch")
    elif signed and policy.require_certified_roster:
        raise RosterError("this client requires an authority-certified roster and none was supplied")


class ClientEpoch(ClientRoundSteps):
    """One client's state in one key epoch (secrets inside). Steps take and return wire bytes; the caller stores
    :meth:`export_local` after every step if the node's steps run in separate processes."""

    def __init__(self, params: Params, policy: ClientPolicy, opening: EpochOpening, key: KeyShare,
                 identity: EpochIdentity | None) -> None:
        self.params = params
        self.policy = policy
        self.opening = opening
        self.threat: ThreatModel = policy.threat_model
        self.key = key
        self.identity = identity
        self.stage = "opened"
        self.members: tuple[MemberEntry, ...] = ()
        self.index = -1
        self.transcript = b""
        self.key_digest = b""
        self.epoch = b""
        self.b_tilde: np.ndarray | None = None
        self.key_sketch: np.ndarray | None = None
        self.rounds: dict[int, RoundRecord] = {}
        self.own_entry = MemberEntry(NO_KEY, bytes(32))
        self._encryptor: object | None = None
        self.threshold: ThresholdMember | None = None

    # ---- K1 ----
    @classmethod
    def open(cls, params: Params, opening_bytes: bytes, policy: ClientPolicy | None = None) -> tuple[ClientEpoch, bytes]:
        """K1: parse the server's opening, make the key share (and the epoch signing key), return the reply."""
        policy = policy or ClientPolicy()
        opening = EpochOpening.from_bytes(params, opening_bytes)
        if opening.threat_model is not policy.threat_model:
            raise VerificationError(
                f"the server opened a {opening.threat_model.value!r} epoch; this client runs {policy.threat_model.value!r}"
            )
        if opening.threshold != policy.threshold:
            raise VerificationError(f"the server opened an epoch with threshold rule {opening.threshold}; this "
                                    f"client accepts {policy.threshold}")
        key = KeyShare.generate(params, opening.crs, max_shares=policy.max_shares)
        threat = policy.threat_model
        identity = EpochIdentity.generate() if threat.signed else None
        own = cls(params, policy, opening, key, identity)
        exchange = None
        if opening.threshold is not None and identity is not None:
            own.threshold = ThresholdMember(opening.threshold, ExchangeKey.generate())
            xpk = own.threshold.exchange.public  # type: ignore[union-attr]
            msg = exchange_message(opening.digest(params), identity.verification_key, xpk)
            exchange = (xpk, identity.sign(b"exchange-key", msg))
        b = key.public_share().b
        share_digest = key.public_share().digest
        if identity is None:
            entry = MemberEntry(NO_KEY, share_digest)
        else:
            entry = MemberEntry.make(identity, opening.digest(params), share_digest, share_purpose(threat))
        own.own_entry = entry
        reply = KeySetupReply(threat, entry, None if threat is ThreatModel.MALICIOUS_COLLUDING else b, exchange)
        return own, reply.to_bytes(params)

    @property
    def verification_key(self) -> bytes | None:
        """This client's epoch verification key (for the authority that certifies the roster), or None."""
        return None if self.identity is None else self.identity.verification_key

    # ---- K2 ----
    def on_key_proposal(self, data: bytes, certified_keys: Iterable[bytes] | None = None) -> bytes | None:
        """K2: check the roster (and in honest-but-curious accept ``b~``); return the key response, or None."""
        self._require("opened")
        prop = EpochProposal.from_bytes(self.params, data)
        if prop.threat_model is not self.threat or prop.crs != self.opening.crs:
            raise VerificationError("epoch proposal of another threat model or CRS")
        check_roster(prop.members, self.policy, certified_keys, self.threat.signed)
        matches = [i for i, m in enumerate(prop.members) if m == self.own_entry]
        if len(matches) != 1:
            raise RosterError("the roster does not contain this client's own entry unaltered")
        opening = self.opening.digest(self.params)
        if self.threat.signed and not all(m.valid(opening, share_purpose(self.threat)) for m in prop.members):
            raise VerificationError("a roster entry carries an invalid signature")
        self.members, self.index = prop.members, matches[0]
        self.transcript = epoch_transcript(opening, [(m.verification_key, m.share_digest) for m in prop.members])
        self._check_exchange_keys(prop, opening)
        if self.threat is ThreatModel.MALICIOUS_COLLUDING:
            if prop.b_tilde is not None:
                raise VerificationError("malicious-colluding: the aggregated key must not precede the reveals")
            self.stage = "proposed"
            return KeyResponse(self.index, b=self.key.public_share().b).to_bytes(self.params)
        if prop.b_tilde is None:
            raise VerificationError("epoch proposal without the aggregated key")
        self.b_tilde, self.key_digest = prop.b_tilde, key_digest_of(prop.b_tilde)
        if self.threat is ThreatModel.HONEST_BUT_CURIOUS:
            self._ready()
            return None
        own = sketch(self.key.public_share().b[None], self.params.key_primes, key_challenge(self.transcript, self.key_digest))
        if self.identity is None:
            raise ProtocolStateError("no epoch signing key in a signed threat model")
        sig = self.identity.sign(b"key-sketch", key_sketch_message(self.transcript, self.key_digest, sketch_bytes(own)))
        self.key_sketch, self.stage = own, "proposed"
        return KeyResponse(self.index, own, sig).to_bytes(self.params)

    def _check_exchange_keys(self, prop: EpochProposal, opening: bytes) -> None:
        """t-of-n: every member's X25519 key signed by that member (a key the server swapped in is refused); the
        threshold and the keys extend the roster transcript that every later step binds."""
        if self.threshold is None:
            if prop.exchange is not None:
                raise VerificationError("exchange keys in an epoch without t-of-n decryption")
            return
        if prop.exchange is None or len(prop.exchange) != len(prop.members):
            raise VerificationError("t-of-n epoch proposal without every member's exchange key")
        for m, (xpk, sig) in zip(prop.members, prop.exchange):
            if not verify(m.verification_key, b"exchange-key", exchange_message(opening, m.verification_key, xpk), sig):
                raise VerificationError("a member's exchange key does not carry its own signature (substituted)")
        own = self.threshold.exchange
        if own is None or not hmac.compare_digest(prop.exchange[self.index][0], own.public):
            raise VerificationError("this client's own exchange key was altered")
        t = self.threshold.rule.threshold_for(len(prop.members))
        self.threshold.t, self.threshold.peers = t, tuple(x for x, _ in prop.exchange)
        self.transcript = threshold_transcript(self.transcript, t, self.threshold.peers)

    # ---- T1 / T2 (t-of-n) ----
    def deal_shares(self) -> bytes:
        """T1 (after K2): this member's secret Shamir-shared to every member, each share sealed for its recipient."""
        if self.threshold is None:
            raise ProtocolStateError("this epoch has no t-of-n decryption")
        if self.stage not in ("proposed", "ready"):
            raise ProtocolStateError("dealing needs the checked roster (K2)")
        return self.threshold.deal(self.params, self.key, self.transcript, self.index)

    def on_dealt_shares(self, data: bytes) -> None:
        """T2: open the boxes addressed to this member and combine its threshold key share."""
        if self.threshold is None:
            raise ProtocolStateError("this epoch has no t-of-n decryption")
        self.threshold.combine(self.params, data, self.transcript, self.index)

    # ---- K3 ----
    def on_key_confirmation(self, data: bytes) -> None:
        """K3: malicious, every member's signed sketch sums to the sketch of ``b~``; malicious-colluding, every
        revealed ``b_j`` matches its commitment and the client sums them. Then the epoch is ready."""
        self._require("proposed")
        conf = EpochConfirmation.from_bytes(self.params, data)
        if len(conf.responses) != len(self.members) or any(r.member != i for i, r in enumerate(conf.responses)):
            raise VerificationError("key confirmation must hold one response per member, in roster order")
        if self.threat is ThreatModel.MALICIOUS:
            sketches = []
            for resp, m in zip(conf.responses, self.members):
                if resp.sketch is None:
                    raise VerificationError("a member's key sketch is missing")
                msg = key_sketch_message(self.transcript, self.key_digest, sketch_bytes(resp.sketch))
                if not verify(m.verification_key, b"key-sketch", msg, resp.signature):
                    raise VerificationError("a member's key sketch carries an invalid signature")
                sketches.append(resp.sketch)
            if self.key_sketch is None or self.b_tilde is None:
                raise ProtocolStateError("no own key sketch or aggregated key recorded for this epoch")
            if not hmac.compare_digest(sketch_bytes(sketches[self.index]), sketch_bytes(self.key_sketch)):
                raise VerificationError("this client's own key sketch was altered")
            expected = sketch(self.b_tilde[None], self.params.key_primes, key_challenge(self.transcript, self.key_digest))
            if not np.array_equal(sketch_sum(sketches, self.params.key_primes), expected):
                raise VerificationError("the aggregated key is not the sum of the members' signed public shares")
        else:
            shares = []
            for resp, m in zip(conf.responses, self.members):
                if resp.b is None or not hmac.compare_digest(digest(b"public-share", resp.b), m.share_digest):
                    raise VerificationError("a revealed public share does not match its member's commitment")
                shares.append(resp.b)
            self.b_tilde = sum_mod(shares, self.params.key_primes)
            self.key_digest = key_digest_of(self.b_tilde)
        self._ready()

    def _ready(self) -> None:
        self.epoch = epoch_digest(self.transcript, self.key_digest)
        self.key.bind(self.epoch[:16], len(self.members))
        self.stage = "ready"

    def _require(self, stage: str) -> None:
        if self.stage != stage:
            raise ProtocolStateError(f"this step needs the epoch in stage {stage!r}; it is {self.stage!r}")

    @property
    def encryptor(self) -> object:
        """SEAL encryptor under the verified aggregated key (built once)."""
        self._require("ready")
        if self._encryptor is None:
            if self.b_tilde is None:
                raise ProtocolStateError("no aggregated key recorded for this epoch")
            self._encryptor = scheme.encryptor(self.params, self.opening.crs, self.b_tilde)
        return self._encryptor

    def __repr__(self) -> str:
        return f"ClientEpoch(threat={self.threat.value!r}, stage={self.stage!r}, member={self.index})"

    def __reduce__(self) -> object:
        raise TypeError("ClientEpoch holds secrets and cannot be pickled; use export_local")

    # ---- persistence ----
    def export_local(self) -> bytes:
        """The whole client state (key secret, signing key, roster, records) for the node's OWN storage."""
        p = self.policy
        w = Writer().u8(self.threat.code).u32(p.min_members).u32(p.min_uploads).u32(p.max_shares)
        write_crs(w.u8(int(p.require_certified_roster)), self.opening.crs)
        w.u8(0) if self.identity is None else w.u8(1).raw(self.identity.private_bytes())
        self.key.write_local(w).u8(_STAGES.index(self.stage)).u32(len(self.members))
        for m in self.members:
            m.write(w)
        self.own_entry.write(w.u32(self.index & 0xFFFFFFFF))
        for field_ in (self.transcript, self.key_digest, self.epoch):
            w.u8(0) if not field_ else w.u8(1).raw(field_)
        for a in (self.b_tilde, self.key_sketch):
            w.u8(0) if a is None else w.u8(1).array(a)
        w.u32(len(self.rounds))
        for number, record in sorted(self.rounds.items()):
            record.write(w.u64(number), self.params)
        w.u8(0) if p.threshold is None else p.threshold.write(w.u8(1))  # type: ignore[attr-defined]
        w.u8(0) if self.threshold is None else self.threshold.write_local(w.u8(1))
        return seal(Kind.LOCAL_CLIENT_STATE, self.params, w.getvalue())

    @classmethod
    def import_local(cls, params: Params, data: bytes) -> ClientEpoch:
        """Inverse of :meth:`export_local` (``CryptoFormatError`` on any defect)."""
        r = Reader(open_envelope(Kind.LOCAL_CLIENT_STATE, params, data), "local client state")
        try:
            threat = ThreatModel.from_code(r.u8())
            policy = ClientPolicy(threat, r.u32(), r.u32(), r.u32(), bool(r.u8()))
        except CryptoFormatError:
            raise
        except Exception as exc:
            raise CryptoFormatError(f"local client state: bad policy ({exc})") from None
        opening = EpochOpening(threat, read_crs(r))
        identity = EpochIdentity.from_private_bytes(r.raw(32)) if _flag(r) else None
        key = KeyShare.read_local(params, r)
        stage = r.u8()
        if stage >= len(_STAGES):
            raise CryptoFormatError("local client state: bad stage")
        own = cls(params, policy, opening, key, identity)
        own.stage = _STAGES[stage]
        own.members = tuple(MemberEntry.read(r) for _ in range(r.u32()))
        index = r.u32()
        own.index = -1 if index == 0xFFFFFFFF else index
        own.own_entry = MemberEntry.read(r)
        own.transcript, own.key_digest, own.epoch = (r.raw(32) if _flag(r) else b"" for _ in range(3))
        if _flag(r):
            own.b_tilde = r.array(key_shape(params), params.key_primes)
        if _flag(r):
            own.key_sketch = r.array(key_sketch_shape(params))
        for _ in range(r.u32()):
            number = r.u64()
            own.rounds[number] = RoundRecord.read(params, r)
        if _flag(r):
            rule = ThresholdRule.read(r)
            own.policy = ClientPolicy(threat, policy.min_members, policy.min_uploads, policy.max_shares,
                                      policy.require_certified_roster, rule)
            own.opening = EpochOpening(threat, opening.crs, rule)
        if _flag(r):
            own.threshold = ThresholdMember.read_local(params, r)
        r.done()
        if own.stage != "opened" and not 0 <= own.index < len(own.members):
            raise CryptoFormatError("local client state: member index out of range")
        return own


def _flag(r: Reader) -> bool:
    f = r.u8()
    if f not in (0, 1):
        raise CryptoFormatError("local client state: malformed presence flag")
    return bool(f)
