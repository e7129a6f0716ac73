"""xMK-CKKS secure aggregation as stages of the round workflow: the server never sees one client's update.

The protocol engine is ``bastionfl.crypto`` (``ServerEpoch``, ``ServerRound``); these stages only carry its bytes
to and from the nodes and decide what a missing node means. Stages per threat model (docs/crypto.md):

- honest-but-curious: key_setup (K1; the key with the first train message) → train (uploads) → decrypt → fuse.
- malicious: key_setup (K1, K2: roster and key sketches) → train (signed uploads) → consistency (signed
  transcripts with sketches of each c1) → decrypt (C1 with every signature) → fuse.
- malicious-colluding: key_setup (K1 commitments, K2 reveals) → train (signed commitments) → reveal (the frozen
  commitment list out, ciphertexts in) → consistency → decrypt (every c1 of U) → fuse.

A key epoch is renewed by ``crypto.EpochPolicy``. A node missing at key setup is left out of the epoch; a node
missing at upload is left out of the round's upload set U (the round goes on while U holds ``min_uploads``);
decryption needs every member of the epoch (N-of-N), so a node missing there makes the attempt fail and the round
is retried under a fresh epoch with the survivors: the global model is never updated from a partial sum. With
``threshold`` < 1 (t-of-n) a decrypting set S of t members that signed the transcript answers; a member of S that
drops makes the stage retry on the re-randomised aggregate under a new S, without a new epoch or retraining, until
fewer than t signers are left (then the round fails cleanly as before).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from bastionfl.config import RunConfig, ThreatModel
from bastionfl.crypto import CryptoError, Params, ServerEpoch, ServerRound, get_profile
from bastionfl.crypto import ThreatModel as CryptoThreatModel
from bastionfl.protocol import Key, ProtocolError
from bastionfl.server.stages import Participation
from bastionfl.server.workflow import RoundFailed, RoundState, ServerContext

__all__ = ["KeyEpoch", "SecureState", "REFUSED", "crypto_threat", "params_of", "drop_out",
           "secure_stages"]

log = logging.getLogger("bastionfl.server")
REFUSED = (CryptoError, KeyError, ProtocolError, ValueError, TypeError)  # a malformed or refused reply


def crypto_threat(cfg: RunConfig) -> CryptoThreatModel:
    """The crypto engine's threat model for the configured one (the same names)."""
    return CryptoThreatModel(str(cfg.secure.threat_model))


def params_of(cfg: RunConfig) -> Params:
    """The configured xMK-CKKS parameter profile."""
    return get_profile(str(cfg.secure.he_profile))


@dataclass
class KeyEpoch:
    """One key epoch as the server knows it: the engine's public state and which node is which member."""

    number: int
    engine: ServerEpoch
    members: dict[int, int]  # node id -> member index
    weight_norm: float
    key_message: bytes  # the last key-setup message, carried by the epoch's first train message
    first_round: int
    valid: bool = True
    rounds_used: int = 0
    keyed: set[int] = field(default_factory=set)  # nodes known to have taken the key message (they answered after it)
    started: set[int] = field(default_factory=set)  # rounds whose uploads this epoch took: a retry needs a new epoch
    dealt: dict[int, bytes] = field(default_factory=dict)  # t-of-n: node -> the sealed shares addressed to it
    live: int = 0  # t-of-n: members that answered every message of the last round
    silent: set[int] = field(default_factory=set)  # nodes that missed a message of the round in flight

    def mark_keyed(self, node: int) -> None:
        """The node answered after the key message, so it holds it: its sealed shares need not be kept any more."""
        self.keyed.add(node)
        self.dealt.pop(node, None)

    @property
    def threshold(self) -> int | None:
        """t of a t-of-n epoch, None when every member decrypts."""
        return self.engine.threshold

    def key_blobs(self, node: int) -> dict[str, bytes]:
        """The epoch's last key message for a node that has not taken it yet (it missed the first train message)."""
        if node in self.keyed:
            return {}
        blobs = {Key.KEY_MESSAGE: self.key_message}
        if node in self.dealt:
            blobs[Key.DEALT] = self.dealt[node]
        return blobs

    @property
    def nodes(self) -> list[int]:
        """The member nodes, in member order."""
        return sorted(self.members, key=self.members.__getitem__)


@dataclass
class SecureState:
    """The secure-aggregation stages' run-long state: the current key epoch and the round in flight."""

    epoch: KeyEpoch | None = None
    current: ServerRound | None = None
    uploaders: list[int] = field(default_factory=list)  # nodes in the round's upload set U
    roster: bytes | None = None  # the Home Authority's signed roster of the epoch being set up

    def invalidate_epoch(self) -> None:
        """After a dropout at decryption the epoch cannot decrypt any more (N-of-N): the next attempt re-keys."""
        if self.epoch is not None:
            self.epoch.valid = False

    def require_epoch(self) -> KeyEpoch:
        if self.epoch is None:
            raise RoundFailed("no key epoch: the key_setup stage must run before this stage")
        return self.epoch

    def require_round(self) -> ServerRound:
        if self.current is None:
            raise RoundFailed("no round in flight: the train stage must run before this stage")
        return self.current


def drop_out(ctx: ServerContext, rs: RoundState, stage: str, nodes: list[int], *, exclude: bool) -> None:
    """Count ``nodes`` as dropped at ``stage``; ``exclude``: they sit out the retry and the epoch is spent."""
    participation = ctx.states.get(Participation)
    participation.dropped(rs, stage, nodes)
    if exclude and nodes:
        participation.exclude(rs.server_round, nodes)
        ctx.states.get(SecureState).invalidate_epoch()


def secure_stages(cfg: RunConfig) -> list:
    """The HE stages, in order, that replace plaintext train + aggregate for the configured threat model."""
    from bastionfl.server.secure_epoch import KeySetupStage
    from bastionfl.server.secure_round import ConsistencyStage, DecryptStage, FuseStage, RevealStage, UploadStage

    stages: list = [KeySetupStage(), UploadStage()]
    threat = cfg.secure.threat_model
    if threat is ThreatModel.MALICIOUS_COLLUDING:
        stages.append(RevealStage())
    if threat is not ThreatModel.HONEST_BUT_CURIOUS:
        stages.append(ConsistencyStage())
    return stages + [DecryptStage(), FuseStage()]
