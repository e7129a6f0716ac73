"""xMK-CKKS secure aggregation as stages of the round workflow (the server never sees one client's update).

key setup (when due) → train + encrypt with streaming aggregation → decrypt (verified, smudged shares) → fuse.
A key epoch is redone every ``key_epoch_rounds`` rounds and whenever the participant set changes. A node missing
at key setup is left out of the epoch; missing at upload or decryption, the round fails and is retried with the
survivors under a fresh epoch: the global model is never updated from a partial sum.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict  # noqa: F401 - Message in type hints

from bastionfl.client.secure import array_blob, blob_array
from bastionfl.crypto import (
    AggregatedPublicKey,
    CryptoError,
    CrsSeed,
    DecryptionShare,
    EncryptedVector,
    PublicKeyShare,
    StreamingAggregator,
    get_profile,
    weighted_mean,
)
from bastionfl.server.stages import client_metrics_of, task_config_record
from bastionfl.server.workflow import RoundFailed, RoundState, ServerContext
from bastionfl.tasks.vectorize import apply_delta

__all__ = ["KeyEpoch", "KeySetupStage", "EncryptedTrainStage", "DecryptStage", "FuseStage", "secure_stages"]

log = logging.getLogger("bastionfl.server")


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
class _RoundCrypto:
    """What the HE stages of one round hand each other."""

    aggregate: Any = None
    weight_total: float = 0.0
    shares: list[DecryptionShare] = field(default_factory=list)


def _note_dropouts(ctx: ServerContext, rs: RoundState, stage: str, nodes: list[int]) -> None:
    if not nodes:
        return
    counts = ctx.run_state.setdefault("checkpointable", {}).setdefault("dropouts", {})
    counts[stage] = counts.get(stage, 0) + len(nodes)
    rs.metrics.setdefault("dropouts", {}).setdefault(stage, 0)
    rs.metrics["dropouts"][stage] += len(nodes)
    rs.events.append(f"{stage}: {len(nodes)} node(s) dropped out")
    log.warning("round %d, %s: %d node(s) dropped out", rs.server_round, stage, len(nodes))


def _exclude(ctx: ServerContext, rs: RoundState, nodes: list[int]) -> None:
    """Keep ``nodes`` out of this round's retry and invalidate the epoch they belonged to."""
    ctx.run_state.setdefault("dropped", {}).setdefault(rs.server_round, set()).update(nodes)
    epoch: KeyEpoch | None = ctx.run_state.get("xmk_epoch")
    if epoch is not None:
        epoch.valid = False


def _config(ctx: ServerContext, rs: RoundState) -> ConfigRecord:
    return task_config_record(ctx.cfg, rs.server_round)


class KeySetupStage:
    """Start a key epoch when due: public CRS seed out, public key shares in, aggregated key built."""

    name = "key_setup"

    def run(self, ctx: ServerContext, rs: RoundState) -> None:
        epoch: KeyEpoch | None = ctx.run_state.get("xmk_epoch")
        due = (epoch is None or not epoch.valid or sorted(epoch.participants) != sorted(rs.node_ids)
               or epoch.rounds_used >= ctx.cfg.key_epoch_rounds)
        if not due:
            return
        params = get_profile(ctx.cfg.he_profile)
        number = (epoch.number + 1) if epoch else 1
        session = f"bastionfl/run/{ctx.run_id}"  # public; the CRS polynomial a follows from it and the epoch
        xmk = ConfigRecord({"session": session, "epoch": number, "profile": ctx.cfg.he_profile})
        config = _config(ctx, rs)
        replies, failed = rs.messenger(ctx).exchange(
            self.name, "query.xmk_keygen", rs.node_ids, lambda _n: RecordDict({"xmk": xmk, "config": config}),
            group_id=f"{rs.server_round}.key")
        shares, counts, nodes = [], [], []
        for reply in replies:
            try:
                shares.append(PublicKeyShare.from_bytes(params, array_blob(reply.content["xmk"]["public-share"])))
            except (CryptoError, KeyError, ValueError) as exc:
                log.warning("key setup: malformed share from a node (%s); leaving it out", exc)
                failed.append(reply.metadata.src_node_id)
                continue
            counts.append(float(reply.content["metrics"]["num-examples"]))
            nodes.append(reply.metadata.src_node_id)
        _note_dropouts(ctx, rs, "keygen", sorted(set(failed)))
        if len(nodes) < 2:
            raise RoundFailed(f"key setup: {len(nodes)} participant(s); xMK-CKKS needs at least 2")
        crs = CrsSeed.from_session(session, number)
        apk = AggregatedPublicKey.aggregate(params, crs, shares)
        ctx.run_state["xmk_epoch"] = KeyEpoch(number, nodes, apk, apk.to_bytes(), sum(counts), rs.server_round)
        rs.node_ids = sorted(nodes)
        rs.metrics["key_epoch"] = number


class EncryptedTrainStage:
    """Send the model and the aggregated key; sum the encrypted updates as they arrive (one update in memory)."""

    name = "train"

    def run(self, ctx: ServerContext, rs: RoundState) -> None:
        epoch: KeyEpoch = ctx.run_state["xmk_epoch"]
        params = get_profile(ctx.cfg.he_profile)
        arrays = ArrayRecord(rs.global_state)
        xmk = ArrayRecord({"apk": blob_array(epoch.apk_bytes)})
        xmk_config = ConfigRecord({"weight-norm": epoch.weight_norm, "participants": len(epoch.participants),
                                   "epoch": epoch.number})
        config = _config(ctx, rs)
        aggregator = StreamingAggregator(params, epoch.apk)
        crypto = _RoundCrypto()
        add_time = [0.0]
        per_client: dict[str, dict[str, float]] = {}

        def on_reply(reply: Message) -> bool:
            try:
                update = EncryptedVector.from_bytes(params, array_blob(reply.content["xmk"]["update"]))
                start = time.perf_counter()
                aggregator.add(update)
                add_time[0] += time.perf_counter() - start
            except (CryptoError, KeyError, ValueError) as exc:
                log.warning("train: refused an encrypted update (%s)", exc)
                return False
            crypto.weight_total += float(reply.content["metrics"]["weight"])
            per_client[str(reply.metadata.src_node_id)] = client_metrics_of(reply)
            return True

        failed = rs.messenger(ctx).exchange_streaming(
            self.name, "train.xmk", epoch.participants,
            lambda _n: RecordDict({"arrays": arrays, "xmk": xmk, "xmk-config": xmk_config, "config": config}),
            group_id=f"{rs.server_round}.train", on_reply=on_reply)
        rs.stage_times["aggregate"] = add_time[0]
        if failed:
            _note_dropouts(ctx, rs, "upload", failed)
            _exclude(ctx, rs, failed)
            raise RoundFailed(f"{len(failed)} participant(s) missing at upload; re-keying for the survivors")
        crypto.aggregate = aggregator.result()
        rs.metrics["client_metrics"] = per_client
        rs.metrics["num_examples"] = int(round(crypto.weight_total * epoch.weight_norm))
        ctx.run_state["xmk_round"] = crypto
        epoch.rounds_used += 1


class DecryptStage:
    """Send the aggregate's C1 with every participant's c1; collect one verified, smudged share from each."""

    name = "decrypt"

    def run(self, ctx: ServerContext, rs: RoundState) -> None:
        epoch: KeyEpoch = ctx.run_state["xmk_epoch"]
        crypto: _RoundCrypto = ctx.run_state["xmk_round"]
        params = get_profile(ctx.cfg.he_profile)
        request = crypto.aggregate.decryption_request(rs.server_round)
        xmk = ArrayRecord({"request": blob_array(request.to_bytes())})
        config = _config(ctx, rs)
        replies, failed = rs.messenger(ctx).exchange(
            self.name, "query.xmk_decrypt", epoch.participants, lambda _n: RecordDict({"xmk": xmk, "config": config}),
            group_id=f"{rs.server_round}.decrypt")
        crypto.shares = []
        for reply in replies:
            per_node = rs.metrics.setdefault("client_metrics", {}).setdefault(str(reply.metadata.src_node_id), {})
            per_node.update(client_metrics_of(reply))
            try:
                crypto.shares.append(DecryptionShare.from_bytes(params, array_blob(reply.content["xmk"]["share"])))
            except (CryptoError, KeyError, ValueError) as exc:
                log.warning("decrypt: malformed share (%s)", exc)
                failed.append(reply.metadata.src_node_id)
        if failed:
            _note_dropouts(ctx, rs, "decrypt", sorted(set(failed)))
            _exclude(ctx, rs, sorted(set(failed)))
            raise RoundFailed(f"{len(set(failed))} participant(s) gave no share; retrying with the survivors")


class FuseStage:
    """``C0 + Σ D_i`` decoded and divided by the total weight: the new global model (refuses partial share sets)."""

    name = "fuse"

    def run(self, ctx: ServerContext, rs: RoundState) -> None:
        epoch: KeyEpoch = ctx.run_state["xmk_epoch"]
        crypto: _RoundCrypto = ctx.run_state.pop("xmk_round")
        try:
            mean_delta = weighted_mean(crypto.aggregate, crypto.shares, crypto.weight_total, len(epoch.participants))
        except CryptoError as exc:
            _exclude(ctx, rs, [])
            raise RoundFailed(f"fusion refused: {exc}") from None
        rs.new_state = apply_delta(rs.global_state, mean_delta)


def secure_stages() -> list[Any]:
    """The HE stages, in order, that replace plaintext train + aggregate."""
    return [KeySetupStage(), EncryptedTrainStage(), DecryptStage(), FuseStage()]
