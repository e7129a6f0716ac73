"""The round stages of secure aggregation: uploads (or commitments then reveals), the signed consistent transcript,
decryption shares and fusion. Every byte is the crypto engine's; these stages carry them and count dropouts.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

from bastionfl.alloc import trim_freed_memory
from bastionfl.config import ThreatModel
from bastionfl.crypto import CryptoError, ServerRound
from bastionfl.crypto.threshold import MAX_REPROPOSALS
from bastionfl.protocol import Key, MessageType, Record, Stage, array_blob, blob_array, config_record
from bastionfl.server.secure import REFUSED, KeyEpoch, SecureState, drop_out
from bastionfl.server.stages import client_metrics_of
from bastionfl.server.workflow import RoundFailed, RoundState, ServerContext
from bastionfl.tasks.vectorize import apply_delta

__all__ = ["UploadStage", "RevealStage", "ConsistencyStage", "DecryptStage", "FuseStage"]

log = logging.getLogger("bastionfl.server")


def _content(ctx: ServerContext, rs: RoundState, epoch: KeyEpoch, blobs: dict[str, bytes]) -> RecordDict:
    meta = ConfigRecord({Key.EPOCH: epoch.number, Key.THREAT_MODEL: str(ctx.cfg.secure.threat_model),
                         Key.WEIGHT_NORM: epoch.weight_norm, Key.PARTICIPANTS: len(epoch.members)})
    return RecordDict({Record.XMK: ArrayRecord({k: blob_array(v) for k, v in blobs.items()}),
                       Record.XMK_CONFIG: meta, Record.CONFIG: config_record(ctx.cfg, rs.server_round)})


def _collect(ctx: ServerContext, rs: RoundState, stage: str, message_type: str, nodes: list[int],
             content_for: Callable[[int], RecordDict], take: Callable[[Message], None]) -> list[int]:
    """One exchange: ``take`` each reply (a refused reply counts as failed); returns the nodes that failed."""
    replies, failed = rs.messenger(ctx).exchange(stage, message_type, nodes, content_for,
                                                 group_id=f"{rs.server_round}.{stage}")
    for reply in replies:
        per_node = rs.metrics.setdefault("client_metrics", {}).setdefault(str(reply.metadata.src_node_id), {})
        per_node.update(client_metrics_of(reply))
        try:
            take(reply)
        except REFUSED as exc:
            log.warning("%s: refused a reply (%s)", stage, exc)
            failed.append(reply.metadata.src_node_id)
    return sorted(set(failed))


def _check_uploads(ctx: ServerContext, rs: RoundState, state: SecureState) -> None:
    n = len(state.uploaders)
    rs.metrics["uploaders"] = n
    if n < ctx.cfg.secure.min_uploads:
        state.invalidate_epoch()
        raise RoundFailed(f"{n} upload(s), fewer than min_uploads {ctx.cfg.secure.min_uploads}: the round is retried")


class UploadStage:
    """Send the model (and the epoch's last key message in its first round); take each encrypted upload as it
    arrives (its commitment alone in malicious-colluding). A node that does not upload is left out of U."""

    name = Stage.TRAIN

    def run(self, ctx: ServerContext, rs: RoundState) -> None:
        state = ctx.states.get(SecureState)
        epoch = state.require_epoch()
        state.current, state.uploaders = epoch.engine.new_round(rs.server_round), []
        epoch.started.add(rs.server_round)
        epoch.silent = set()
        current = state.current
        colluding = ctx.cfg.secure.threat_model is ThreatModel.MALICIOUS_COLLUDING
        arrays = ArrayRecord(rs.global_state)

        def content_for(node: int) -> RecordDict:
            content = _content(ctx, rs, epoch, epoch.key_blobs(node))
            content[Record.ARRAYS] = arrays
            return content

        add_time = [0.0]
        per_client: dict[str, dict[str, float]] = {}

        def on_reply(reply: Message) -> bool:
            try:
                data = array_blob(reply.content[Record.XMK][Key.UPLOAD])
                start = time.perf_counter()
                member = current.add_commitment(data) if colluding else current.add_upload(data)
                add_time[0] += time.perf_counter() - start
            except REFUSED as exc:
                log.warning("train: refused an upload (%s)", exc)
                return False
            if epoch.members.get(reply.metadata.src_node_id) != member:
                log.warning("train: a node uploaded under another member's index")
                return False
            if not colluding:
                state.uploaders.append(reply.metadata.src_node_id)
            epoch.mark_keyed(reply.metadata.src_node_id)
            per_client[str(reply.metadata.src_node_id)] = client_metrics_of(reply)
            return True

        failed = rs.messenger(ctx).exchange_streaming(
            self.name, MessageType.XMK_TRAIN, epoch.nodes, content_for, group_id=f"{rs.server_round}.train",
            on_reply=on_reply)
        rs.stage_times[Stage.AGGREGATE] = add_time[0]
        rs.metrics["client_metrics"] = per_client
        epoch.rounds_used += 1
        epoch.silent.update(failed)
        drop_out(ctx, rs, Stage.UPLOAD, failed, exclude=False)  # left out of U; the round goes on
        trim_freed_memory("train")  # the sent messages (with an epoch's dealt shares in its first round) are gone
        if not colluding:
            state.uploaders.sort()
            _check_uploads(ctx, rs, state)
            rs.metrics["num_examples"] = int(round(current.total_weight * epoch.weight_norm))


class RevealStage:
    """Malicious-colluding: the frozen commitment list out; each committed member reveals its ciphertexts."""

    name = Stage.REVEAL

    def run(self, ctx: ServerContext, rs: RoundState) -> None:
        state = ctx.states.get(SecureState)
        epoch, current = state.require_epoch(), state.require_round()
        try:
            blob = current.commitment_list()
        except CryptoError as exc:
            raise RoundFailed(f"reveal: {exc}") from None
        committed = sorted(n for n, i in epoch.members.items() if i in current.commitments)
        content = _content(ctx, rs, epoch, {Key.COMMITMENTS: blob})

        def take(reply: Message) -> None:
            member = current.add_upload(array_blob(reply.content[Record.XMK][Key.UPLOAD]))
            if epoch.members.get(reply.metadata.src_node_id) != member:
                raise ValueError("a node revealed under another member's index")
            state.uploaders.append(reply.metadata.src_node_id)

        failed = _collect(ctx, rs, self.name, MessageType.XMK_REVEAL, committed, lambda _n: content, take)
        drop_out(ctx, rs, Stage.REVEAL, failed, exclude=False)
        state.uploaders.sort()
        _check_uploads(ctx, rs, state)
        rs.metrics["num_examples"] = int(round(current.total_weight * epoch.weight_norm))


class ConsistencyStage:
    """Signed threat models: the round's proposal (U, commitments, the aggregate's digest) out; every member signs
    the transcript (in malicious with a sketch of its own c1). One missing signature fails the attempt (N-of-N);
    t-of-n goes on with t signers, re-proposing U without the members of U that did not sign (malicious)."""

    name = Stage.CONSISTENCY

    def run(self, ctx: ServerContext, rs: RoundState) -> None:
        state = ctx.states.get(SecureState)
        epoch, current = state.require_epoch(), state.require_round()
        try:
            proposals = {n: current.proposal(for_member=i) for n, i in epoch.members.items()}
        except CryptoError as exc:
            raise RoundFailed(f"consistency: {exc}") from None
        failed = _collect(ctx, rs, self.name, MessageType.XMK_CONSISTENCY, epoch.nodes,
                          lambda n: _content(ctx, rs, epoch, {Key.PROPOSAL: proposals[n], **epoch.key_blobs(n)}),
                          lambda reply: self._take(epoch, current, reply))
        if failed and epoch.threshold is not None and self._threshold_goes_on(ctx, rs, epoch, current, failed):
            return
        if failed:
            drop_out(ctx, rs, Stage.CONSISTENCY, failed, exclude=True)
            # N-of-N: no member released a share without every signature, so a retry is safe; t-of-n: the signers'
            # transcript can be decrypted by any t of them, and they never upload this round again
            n_of_n = epoch.threshold is None
            raise RoundFailed(f"{len(failed)} member(s) did not sign the round transcript; "
                              + ("retrying with the survivors" if n_of_n else "skipping the round"), retry=n_of_n)

    def _threshold_goes_on(self, ctx: ServerContext, rs: RoundState, epoch: KeyEpoch, current: ServerRound,
                           failed: list[int]) -> bool:
        """t-of-n: the round goes on with t signers. In malicious a member of U that did not sign leaves U (its
        sketch vouched for C1): the live signers sign a proposal for U' = U minus those members, at most
        ``MAX_REPROPOSALS`` times; ``failed`` gathers every node that failed on the way."""
        state = ctx.states.get(SecureState)
        while True:
            in_u = sorted(i for n in failed if (i := epoch.members.get(n)) in current.uploads)
            if not in_u or ctx.cfg.secure.threat_model is not ThreatModel.MALICIOUS:
                break
            left = len(current.uploads) - len(in_u)
            if left < ctx.cfg.secure.min_uploads or current.reproposals >= MAX_REPROPOSALS:
                log.warning("consistency: %d upload(s) would be left (min_uploads %d), re-proposal %d: giving up",
                            left, ctx.cfg.secure.min_uploads, current.reproposals + 1)
                return False
            live = [n for n in epoch.nodes if n not in failed and epoch.members.get(n) in current.signers]
            if len(live) < (epoch.threshold or 0):
                return False
            current.repropose(in_u)
            gone = {n for n in failed if epoch.members.get(n) in in_u}
            state.uploaders = [n for n in state.uploaders if n not in gone]
            rs.metrics["uploaders"] = len(current.uploads)
            rs.metrics["num_examples"] = int(round(current.total_weight * epoch.weight_norm))
            rs.metrics["reproposals"] = current.reproposals
            log.info("consistency: %d member(s) of U did not sign; re-proposing U' of %d upload(s)", len(in_u),
                     len(current.uploads))
            proposals = {n: current.proposal(for_member=epoch.members[n]) for n in live}
            failed += _collect(ctx, rs, self.name, MessageType.XMK_CONSISTENCY, live,
                               lambda n: _content(ctx, rs, epoch, {Key.PROPOSAL: proposals[n], **epoch.key_blobs(n)}),
                               lambda reply: self._take(epoch, current, reply))
            failed[:] = sorted(set(failed))
        if len(current.signers) < (epoch.threshold or 0):
            return False
        epoch.silent.update(failed)
        drop_out(ctx, rs, Stage.CONSISTENCY, failed, exclude=False)
        return True

    @staticmethod
    def _take(epoch: KeyEpoch, current: ServerRound, reply: Message) -> None:
        current.add_signature(array_blob(reply.content[Record.XMK][Key.SIGNATURE]))
        epoch.mark_keyed(reply.metadata.src_node_id)


class DecryptStage:
    """Collect one decryption share from every member: after the proposal (honest-but-curious) or after the
    confirmation carrying every signature and C1 (malicious) or every c1 of U (malicious-colluding)."""

    name = Stage.DECRYPT

    def run(self, ctx: ServerContext, rs: RoundState) -> None:
        state = ctx.states.get(SecureState)
        epoch, current = state.require_epoch(), state.require_round()
        if epoch.threshold is not None:
            self._threshold(ctx, rs, state, epoch, current)
            return
        rs.metrics["shares_used"] = len(epoch.members)
        hbc = ctx.cfg.secure.threat_model is ThreatModel.HONEST_BUT_CURIOUS
        try:
            blob = current.proposal() if hbc else current.confirmation()
        except CryptoError as exc:
            state.invalidate_epoch()
            raise RoundFailed(f"decrypt: {exc}") from None
        failed = _collect(ctx, rs, self.name, MessageType.XMK_DECRYPT, epoch.nodes,
                          lambda n: _content(ctx, rs, epoch, {Key.PROPOSAL if hbc else Key.CONFIRMATION: blob,
                                                              **epoch.key_blobs(n)}),
                          lambda reply: self._take(epoch, current, reply))
        if failed:
            drop_out(ctx, rs, Stage.DECRYPT, failed, exclude=True)
            raise RoundFailed(f"{len(failed)} member(s) gave no share; the others released theirs and never upload "
                              "this round again, so it is skipped", retry=False)

    def _threshold(self, ctx: ServerContext, rs: RoundState, state: SecureState, epoch: KeyEpoch,
                   current: ServerRound) -> None:
        """t-of-n: the first t live signers are the decrypting set S; a member of S that gives no share makes a new
        attempt (re-randomised aggregate, new S) without re-keying or retraining; fewer than t: a clean failure."""
        t = epoch.threshold or 0
        node_of = {i: n for n, i in epoch.members.items()}
        gone: set[int] = set()
        attempt = 0
        while True:
            live = [i for i in current.signers if node_of[i] not in gone]
            if len(live) < t:
                state.invalidate_epoch()
                raise RoundFailed(f"{len(live)} signer(s) left for t = {t}: nothing is decrypted; skipping the round "
                                  "and re-keying", retry=False)
            try:
                blob = current.confirmation(attempt, tuple(live[:t]))
            except CryptoError as exc:
                state.invalidate_epoch()
                raise RoundFailed(f"decrypt: {exc}") from None
            nodes = [node_of[i] for i in live[:t]]
            failed = _collect(ctx, rs, self.name, MessageType.XMK_DECRYPT, nodes,
                              lambda n: _content(ctx, rs, epoch, {Key.CONFIRMATION: blob, **epoch.key_blobs(n)}),
                              lambda reply: self._take(epoch, current, reply))
            if not failed:
                break
            drop_out(ctx, rs, Stage.DECRYPT, failed, exclude=False)
            gone.update(failed)
            epoch.silent.update(failed)
            attempt += 1
        rs.metrics["shares_used"] = t
        rs.metrics["decrypt_attempts"] = attempt + 1
        epoch.live = len(epoch.members) - len(epoch.silent)


    @staticmethod
    def _take(epoch: KeyEpoch, current: ServerRound, reply: Message) -> None:
        current.add_share(array_blob(reply.content[Record.XMK][Key.SHARE]))
        epoch.mark_keyed(reply.metadata.src_node_id)


class FuseStage:
    """``C0 + Σ D_i`` decoded, range-checked and divided by U's committed weights: the new global model."""

    name = Stage.FUSE

    def run(self, ctx: ServerContext, rs: RoundState) -> None:
        state = ctx.states.get(SecureState)
        current = state.require_round()
        state.current = None
        try:
            mean_delta = current.weighted_mean()
        except CryptoError as exc:
            state.invalidate_epoch()
            raise RoundFailed(f"fusion refused: {exc}", retry=False) from None
        rs.new_state = apply_delta(rs.global_state, mean_delta)

