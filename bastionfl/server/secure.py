"""xMK-CKKS secure aggregation as stages of the round workflow (the server never sees one client's update).

key setup (when due) → train + encrypt with streaming aggregation → decrypt (verified, smudged shares) → fuse.
A key epoch is renewed by ``crypto.EpochPolicy`` (every ``key_epoch_rounds`` rounds, and whenever the participant
set changes). A node missing at key setup is left out of the epoch; missing at upload or decryption, the round fails
and is retried with the survivors under a fresh epoch: the global model is never updated from a partial sum.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

from bastionfl.crypto import (
    Aggregate,
    AggregatedPublicKey,
    CryptoError,
    CrsSeed,
    DecryptionShare,
    EncryptedVector,
    EpochPolicy,
    PublicKeyShare,
    StreamingAggregator,
    get_profile,
    weighted_mean,
)
from bastionfl.protocol import Key, MessageType, ProtocolError, Record, Stage, array_blob, blob_array, config_record
from bastionfl.server.stages import Participation, client_metrics_of
from bastionfl.server.workflow import RoundFailed, RoundState, ServerContext
from bastionfl.tasks.vectorize import apply_delta

__all__ = ["KeyEpoch", "SecureState", "KeySetupStage", "EncryptedTrainStage", "DecryptStage", "FuseStage",
           "secure_stages"]

log = logging.getLogger("bastionfl.server")
_REFUSED = (CryptoError, KeyError, ProtocolError, ValueError, TypeError)  # a malformed or refused reply


@dataclass
class KeyEpoch:
    """One key epoch as the server knows it: public material only."""

    number: int
    participants: list[int]
    apk: AggregatedPublicKey
    apk_bytes: bytes
    weight_norm: float
    first_round: int
    valid: bool = True
    rounds_used: int = 0


@dataclass
class RoundCrypto:
    """What the HE stages of one round hand each other."""

    aggregate: Aggregate
    weight_total: float
    shares: list[DecryptionShare] = field(default_factory=list)


@dataclass
class SecureState:
    """The secure-aggregation stages' run-long state: the current key epoch and the round in flight."""

    epoch: KeyEpoch | None = None
    current: RoundCrypto | None = None

    def invalidate_epoch(self) -> None:
        """After a dropout the epoch's key cannot be decrypted any more (N-of-N): the next attempt re-keys."""
        if self.epoch is not None:
            self.epoch.valid = False

    def require_epoch(self) -> KeyEpoch:
        if self.epoch is None:
            raise RoundFailed("no key epoch: the key_setup stage must run before this stage")
        return self.epoch

    def require_round(self) -> RoundCrypto:
        if self.current is None:
            raise RoundFailed("no encrypted aggregate: the train stage must run before this stage")
        return self.current


def _drop_out(ctx: ServerContext, rs: RoundState, stage: str, nodes: list[int], *, exclude: bool) -> None:
    participation = ctx.states.get(Participation)
    participation.dropped(rs, stage, nodes)
    if exclude:
        participation.exclude(rs.server_round, nodes)
        ctx.states.get(SecureState).invalidate_epoch()


class KeySetupStage:
    """Start a key epoch when due: public CRS seed out, public key shares in, aggregated key built."""

    name = Stage.KEY_SETUP

    def run(self, ctx: ServerContext, rs: RoundState) -> None:
        state = ctx.states.get(SecureState)
        epoch = state.epoch
        policy = EpochPolicy(ctx.cfg.secure.key_epoch_rounds)
        current = epoch.participants if epoch is not None and epoch.valid else None
        if not policy.must_rotate(epoch.rounds_used if epoch else 0, current, rs.node_ids):
            return
        profile = str(ctx.cfg.secure.he_profile)
        params = get_profile(profile)
        number = (epoch.number + 1) if epoch else 1
        session = f"bastionfl/run/{ctx.run_id}"  # public; the CRS polynomial a follows from it and the epoch
        xmk = ConfigRecord({Key.SESSION: session, Key.EPOCH: number, Key.PROFILE: profile})
        config = config_record(ctx.cfg, rs.server_round)
        replies, failed = rs.messenger(ctx).exchange(
            self.name, MessageType.XMK_KEYGEN, rs.node_ids,
            lambda _n: RecordDict({Record.XMK: xmk, Record.CONFIG: config}), group_id=f"{rs.server_round}.key")
        shares, counts, nodes = [], [], []
        for reply in sorted(replies, key=lambda r: r.metadata.src_node_id):
            try:
                blob = array_blob(reply.content[Record.XMK][Key.PUBLIC_SHARE])
                shares.append(PublicKeyShare.from_bytes(params, blob))
                counts.append(float(reply.content[Record.METRICS][Key.NUM_EXAMPLES]))
            except _REFUSED as exc:
                log.warning("key setup: malformed share from a node (%s); leaving it out", exc)
                failed.append(reply.metadata.src_node_id)
                continue
            nodes.append(reply.metadata.src_node_id)
        _drop_out(ctx, rs, Stage.KEYGEN, sorted(set(failed)), exclude=False)
        if len(nodes) < 2:
            raise RoundFailed(f"key setup: {len(nodes)} participant(s); xMK-CKKS needs at least 2")
        crs = CrsSeed.from_session(session, number)
        try:
            apk = AggregatedPublicKey.aggregate(params, crs, shares)
        except CryptoError as exc:
            raise RoundFailed(f"key setup refused: {exc}") from None
        state.epoch = KeyEpoch(number, nodes, apk, apk.to_bytes(), math.fsum(counts), rs.server_round)
        rs.node_ids = sorted(nodes)
        rs.metrics["key_epoch"] = number


class EncryptedTrainStage:
    """Send the model and the aggregated key; sum the encrypted updates as they arrive (one update in memory)."""

    name = Stage.TRAIN

    def run(self, ctx: ServerContext, rs: RoundState) -> None:
        state = ctx.states.get(SecureState)
        epoch = state.require_epoch()
        params = get_profile(str(ctx.cfg.secure.he_profile))
        arrays = ArrayRecord(rs.global_state)
        xmk = ArrayRecord({Key.AGGREGATED_KEY: blob_array(epoch.apk_bytes)})
        xmk_config = ConfigRecord({Key.WEIGHT_NORM: epoch.weight_norm, Key.PARTICIPANTS: len(epoch.participants),
                                   Key.EPOCH: epoch.number})
        config = config_record(ctx.cfg, rs.server_round)
        aggregator = StreamingAggregator(params, epoch.apk)
        weights: list[float] = []
        add_time = [0.0]
        per_client: dict[str, dict[str, float]] = {}

        def on_reply(reply: Message) -> bool:
            try:
                update = EncryptedVector.from_bytes(params, array_blob(reply.content[Record.XMK][Key.UPDATE]))
                weight = float(reply.content[Record.METRICS][Key.WEIGHT])
                start = time.perf_counter()
                aggregator.add(update)  # modular sums: the order of arrival does not change the aggregate
                add_time[0] += time.perf_counter() - start
            except _REFUSED as exc:
                log.warning("train: refused an encrypted update (%s)", exc)
                return False
            weights.append(weight)
            per_client[str(reply.metadata.src_node_id)] = client_metrics_of(reply)
            return True

        failed = rs.messenger(ctx).exchange_streaming(
            self.name, MessageType.XMK_TRAIN, epoch.participants,
            lambda _n: RecordDict({Record.ARRAYS: arrays, Record.XMK: xmk, Record.XMK_CONFIG: xmk_config,
                                   Record.CONFIG: config}),
            group_id=f"{rs.server_round}.train", on_reply=on_reply)
        rs.stage_times[Stage.AGGREGATE] = add_time[0]
        if failed:
            _drop_out(ctx, rs, Stage.UPLOAD, failed, exclude=True)
            raise RoundFailed(f"{len(failed)} participant(s) missing at upload; re-keying for the survivors")
        weight_total = math.fsum(weights)  # exact: independent of the order the replies came in
        state.current = RoundCrypto(aggregator.result(), weight_total)
        rs.metrics["client_metrics"] = per_client
        rs.metrics["num_examples"] = int(round(weight_total * epoch.weight_norm))
        epoch.rounds_used += 1


class DecryptStage:
    """Send the aggregate's C1 with every participant's c1; collect one verified, smudged share from each."""

    name = Stage.DECRYPT

    def run(self, ctx: ServerContext, rs: RoundState) -> None:
        state = ctx.states.get(SecureState)
        epoch, crypto = state.require_epoch(), state.require_round()
        params = get_profile(str(ctx.cfg.secure.he_profile))
        request = crypto.aggregate.decryption_request(rs.server_round)
        xmk = ArrayRecord({Key.REQUEST: blob_array(request.to_bytes())})
        config = config_record(ctx.cfg, rs.server_round)
        replies, failed = rs.messenger(ctx).exchange(
            self.name, MessageType.XMK_DECRYPT, epoch.participants,
            lambda _n: RecordDict({Record.XMK: xmk, Record.CONFIG: config}), group_id=f"{rs.server_round}.decrypt")
        crypto.shares = []
        for reply in replies:
            per_node = rs.metrics.setdefault("client_metrics", {}).setdefault(str(reply.metadata.src_node_id), {})
            per_node.update(client_metrics_of(reply))
            try:
                blob = array_blob(reply.content[Record.XMK][Key.SHARE])
                crypto.shares.append(DecryptionShare.from_bytes(params, blob))
            except _REFUSED as exc:
                log.warning("decrypt: malformed share (%s)", exc)
                failed.append(reply.metadata.src_node_id)
        if failed:
            _drop_out(ctx, rs, Stage.DECRYPT, sorted(set(failed)), exclude=True)
            raise RoundFailed(f"{len(set(failed))} participant(s) gave no share; retrying with the survivors")


class FuseStage:
    """``C0 + Σ D_i`` decoded and divided by the total weight: the new global model (refuses partial share sets)."""

    name = Stage.FUSE

    def run(self, ctx: ServerContext, rs: RoundState) -> None:
        state = ctx.states.get(SecureState)
        epoch, crypto = state.require_epoch(), state.require_round()
        state.current = None
        try:
            mean_delta = weighted_mean(crypto.aggregate, crypto.shares, crypto.weight_total, len(epoch.participants))
        except CryptoError as exc:
            state.invalidate_epoch()
            raise RoundFailed(f"fusion refused: {exc}") from None
        rs.new_state = apply_delta(rs.global_state, mean_delta)


def secure_stages() -> list[KeySetupStage | EncryptedTrainStage | DecryptStage | FuseStage]:
    """The HE stages, in order, that replace plaintext train + aggregate."""
    return [KeySetupStage(), EncryptedTrainStage(), DecryptStage(), FuseStage()]
