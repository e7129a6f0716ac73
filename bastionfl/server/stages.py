"""The plaintext stages: sample nodes, train, aggregate with Flower's FedAvg, evaluate centrally.

Replies are combined in a canonical order (by a digest of their content), never in arrival order, so that a seeded
run gives the same model bit for bit however the nodes' replies interleave.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp.strategy import FedAvg

from bastionfl.protocol import Key, MessageType, Record, Stage, config_record
from bastionfl.server.workflow import RoundFailed, RoundState, ServerContext

__all__ = ["SampleNodes", "connected_nodes", "TrainPlain", "AggregateFedAvg", "EvaluateCentral", "Participation", "canonical_order",
           "client_metrics_of", "collect_client_metrics"]

log = logging.getLogger("bastionfl.server")


@dataclass
class Participation:
    """Who dropped out where: run-long counts per stage (checkpointed) and, per round, the nodes that sit out its
    retry. Written by the stages that see a dropout, read by sampling."""

    checkpoint_name: ClassVar[str] = "dropouts"
    dropouts: dict[str, int] = field(default_factory=dict)
    excluded: dict[int, set[int]] = field(default_factory=dict)

    def dropped(self, rs: RoundState, stage: str, nodes: list[int]) -> None:
        """Count ``nodes`` as dropped out at ``stage`` (run total and the round's metrics and events)."""
        if not nodes:
            return
        self.dropouts[stage] = self.dropouts.get(stage, 0) + len(nodes)
        per_round = rs.metrics.setdefault("dropouts", {})
        per_round[stage] = per_round.get(stage, 0) + len(nodes)
        rs.events.append(f"{stage}: {len(nodes)} node(s) dropped out")
        log.warning("round %d, %s: %d node(s) dropped out", rs.server_round, stage, len(nodes))

    def exclude(self, server_round: int, nodes: list[int]) -> None:
        """Keep ``nodes`` out of the retry of ``server_round``."""
        self.excluded.setdefault(server_round, set()).update(nodes)

    def to_checkpoint(self) -> dict[str, Any]:
        return dict(self.dropouts)

    def restore(self, saved: dict[str, Any]) -> None:
        self.dropouts = {str(k): int(v) for k, v in saved.items()}


def canonical_order(replies: list[Message]) -> list[Message]:
    """Replies sorted by a digest of their arrays and metrics: the order the nodes answered in does not matter."""

    def digest(reply: Message) -> bytes:
        h = hashlib.sha256()
        for name, record in sorted(reply.content.array_records.items()):
            h.update(name.encode())
            for key, arr in record.items():
                h.update(key.encode() + arr.data)
        for name, record in sorted(reply.content.metric_records.items()):
            h.update(repr(sorted(record.items())).encode())
        return h.digest()

    return sorted(replies, key=lambda r: (digest(r), r.metadata.src_node_id))


def connected_nodes(ctx: ServerContext, rs: RoundState) -> list[int]:
    """The connected nodes that may take part in this round: not those that dropped out of its previous attempt."""
    nodes = _wait_connected(ctx)
    if not nodes:
        raise RoundFailed(f"no nodes connected within {ctx.cfg.federation.stage_timeout_s:.0f} s")
    dropped = ctx.states.get(Participation).excluded.get(rs.server_round, set())
    nodes = [n for n in nodes if n not in dropped]  # a node that dropped out sits out this round's retry
    if not nodes:
        raise RoundFailed("every connected node dropped out of this round")
    return nodes


GRACE_S = 2.0  # after the first node appears, how long to wait for the others to register


def _wait_connected(ctx: ServerContext) -> list[int]:
    """Connected node ids, waiting for them to register (the engine may start the ServerApp first)."""
    timeout = ctx.cfg.federation.stage_timeout_s
    deadline = time.monotonic() + timeout
    first_seen: float | None = None
    while True:
        nodes = sorted(int(n) for n in ctx.grid.get_node_ids())
        now = time.monotonic()
        if nodes and first_seen is None:
            first_seen = now
        if len(nodes) >= ctx.cfg.federation.num_clients or now >= deadline or (
                first_seen is not None and now - first_seen >= GRACE_S):
            return nodes
        time.sleep(0.1)


class SampleNodes:
    """Pick this round's nodes: a seeded fraction of the pool (all of them by default).

    The pool is every connected node, or, with ``after_admission``, the nodes admission let in (an unauthenticated
    node never takes a sample slot).
    """

    name = Stage.SAMPLE

    def __init__(self, *, after_admission: bool = False) -> None:
        self.after_admission = after_admission

    def run(self, ctx: ServerContext, rs: RoundState) -> None:
        nodes = list(rs.node_ids) if self.after_admission else connected_nodes(ctx, rs)
        if not nodes:
            raise RoundFailed("no node to sample")
        k = max(1, int(round(ctx.cfg.federation.fraction_train * len(nodes))))
        if k < len(nodes):
            rng = np.random.default_rng([ctx.cfg.federation.seed, rs.server_round])  # public sampling: no CSPRNG
            nodes = sorted(int(n) for n in rng.choice(nodes, size=k, replace=False))
        rs.node_ids = nodes


class TrainPlain:
    """Send the global model to the sampled nodes and collect their trained weights."""

    name = Stage.TRAIN

    def run(self, ctx: ServerContext, rs: RoundState) -> None:
        arrays = ArrayRecord(rs.global_state)
        config = config_record(ctx.cfg, rs.server_round)
        replies, failed = rs.messenger(ctx).exchange(
            self.name, MessageType.TRAIN, rs.node_ids,
            lambda _nid: RecordDict({Record.ARRAYS: arrays, Record.CONFIG: config}), group_id=str(rs.server_round),
        )
        if failed:
            rs.events.append(f"train: {len(failed)} node(s) failed or timed out")
        if not replies:
            raise RoundFailed("no node returned a trained model")
        rs.replies = canonical_order(replies)


class AggregateFedAvg:
    """Example-weighted mean of the returned weights (Flower's FedAvg aggregation), in canonical reply order."""

    name = Stage.AGGREGATE

    def __init__(self) -> None:
        self._strategy = FedAvg(fraction_train=1.0, min_train_nodes=1, min_available_nodes=1)

    def run(self, ctx: ServerContext, rs: RoundState) -> None:
        replies = canonical_order(rs.replies)
        arrays, metrics = self._strategy.aggregate_train(rs.server_round, replies)
        if arrays is None:
            raise RoundFailed("aggregation produced no model")
        new_state = arrays.to_torch_state_dict()
        # keep each tensor's dtype (FedAvg averages integer buffers such as BN's counters in float)
        rs.new_state = {
            k: new_state[k].to(v.dtype) if v.is_floating_point() else new_state[k].round().to(v.dtype)
            for k, v in rs.global_state.items()
        }
        if metrics is not None and Key.TRAIN_LOSS in metrics:
            rs.metrics["train_loss"] = float(metrics[Key.TRAIN_LOSS])
        rs.metrics["num_examples"] = int(sum(int(r.content[Record.METRICS][Key.NUM_EXAMPLES]) for r in replies))
        collect_client_metrics(rs)


def client_metrics_of(reply: Message) -> dict[str, float]:
    """A reply's per-client diagnostics (timings, ABL isolation, poisoned counts) as plain floats."""
    record = reply.content.config_records.get(Record.CLIENT_METRICS, ConfigRecord())
    return {k: float(v) for k, v in record.items() if isinstance(v, (int, float))}


def collect_client_metrics(rs: RoundState) -> None:
    """Per-client diagnostics of the train replies into the round's metrics."""
    per_client = {str(r.metadata.src_node_id): client_metrics_of(r) for r in rs.replies}
    if any(per_client.values()):
        rs.metrics["client_metrics"] = per_client
    isolating = [m for m in per_client.values() if "isolated" in m and "isolated_poisoned" in m]
    if isolating:  # ABL's detection over the federation (simulation ground truth: benign isolations are false)
        isolated = sum(m["isolated"] for m in isolating)
        hits = sum(m["isolated_poisoned"] for m in isolating)
        poisoned = sum(m.get("poisoned", 0.0) for m in isolating)
        rs.metrics["isolation"] = {
            "isolated": isolated, "true_positives": hits, "false_positives": isolated - hits, "poisoned": poisoned,
            "benign_clients_isolating": float(sum(1 for m in isolating if m.get("poisoned", 0.0) == 0
                                                  and m["isolated"] > 0)),
            "precision": hits / isolated if isolated else 1.0, "recall": hits / poisoned if poisoned else 1.0}


class EvaluateCentral:
    """Clean accuracy and loss of the new global model on held-out data (server side), and the attack success rate
    when an attack is configured (the task decides what both are measured on)."""

    name = Stage.EVALUATE

    def run(self, ctx: ServerContext, rs: RoundState) -> None:
        state = rs.new_state if rs.new_state is not None else rs.global_state
        model = ctx.new_model()
        model.load_state_dict(state)
        rs.metrics.update(ctx.task.evaluate(model))
