"""The plaintext stages: sample nodes, train, aggregate with Flower's FedAvg, evaluate centrally."""

from __future__ import annotations

import logging
import time

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp.strategy import FedAvg

from bastionfl.config import RunConfig
from bastionfl.server.workflow import RoundFailed, RoundState, ServerContext

__all__ = ["SampleNodes", "TrainPlain", "AggregateFedAvg", "EvaluateCentral", "task_config_record"]

log = logging.getLogger("bastionfl.server")


def task_config_record(cfg: RunConfig, server_round: int) -> ConfigRecord:
    """The run configuration as a ConfigRecord for clients (they rebuild the same RunConfig from it)."""
    values = {k: v for k, v in cfg.to_dict().items() if k not in ("out_dir", "verbose")}
    values["round"] = server_round
    return ConfigRecord(values)


class SampleNodes:
    """Pick this round's nodes: a seeded fraction of the connected nodes (all of them by default)."""

    name = "sample"

    GRACE_S = 2.0  # after the first node appears, how long to wait for the others to register

    def run(self, ctx: ServerContext, rs: RoundState) -> None:
        nodes = self._connected(ctx)
        if not nodes:
            raise RoundFailed(f"no nodes connected within {ctx.cfg.stage_timeout_s:.0f} s")
        dropped = ctx.run_state.get("dropped", {}).get(rs.server_round, set())
        nodes = [n for n in nodes if n not in dropped]  # a node that dropped out sits out this round's retry
        if not nodes:
            raise RoundFailed("every connected node dropped out of this round")
        k = max(1, int(round(ctx.cfg.fraction_train * len(nodes))))
        if k < len(nodes):
            rng = np.random.default_rng([ctx.cfg.seed, rs.server_round])  # sampling is public; no CSPRNG needed
            nodes = sorted(int(n) for n in rng.choice(nodes, size=k, replace=False))
        rs.node_ids = nodes

    def _connected(self, ctx: ServerContext) -> list[int]:
        """Connected node ids, waiting for them to register (the engine may start the ServerApp first)."""
        deadline = time.monotonic() + ctx.cfg.stage_timeout_s
        first_seen: float | None = None
        while True:
            nodes = sorted(int(n) for n in ctx.grid.get_node_ids())
            now = time.monotonic()
            if nodes and first_seen is None:
                first_seen = now
            if len(nodes) >= ctx.cfg.num_clients or now >= deadline or (
                    first_seen is not None and now - first_seen >= self.GRACE_S):
                return nodes
            time.sleep(0.1)


class TrainPlain:
    """Send the global model to the sampled nodes and collect their trained weights."""

    name = "train"

    def run(self, ctx: ServerContext, rs: RoundState) -> None:
        arrays = ArrayRecord(rs.global_state)
        config = task_config_record(ctx.cfg, rs.server_round)
        replies, failed = rs.messenger(ctx).exchange(
            self.name, "train", rs.node_ids, lambda _nid: RecordDict({"arrays": arrays, "config": config}),
            group_id=str(rs.server_round),
        )
        if failed:
            rs.events.append(f"train: {len(failed)} node(s) failed or timed out")
        if not replies:
            raise RoundFailed("no node returned a trained model")
        rs.replies = replies


class AggregateFedAvg:
    """Example-weighted mean of the returned weights (Flower's FedAvg aggregation)."""

    name = "aggregate"

    def __init__(self) -> None:
        self._strategy = FedAvg(fraction_train=1.0, min_train_nodes=1, min_available_nodes=1)

    def run(self, ctx: ServerContext, rs: RoundState) -> None:
        arrays, metrics = self._strategy.aggregate_train(rs.server_round, rs.replies)
        if arrays is None:
            raise RoundFailed("aggregation produced no model")
        new_state = arrays.to_torch_state_dict()
        # keep each tensor's dtype (FedAvg averages integer buffers such as BN's counters in float)
        rs.new_state = {
            k: new_state[k].to(v.dtype) if v.is_floating_point() else new_state[k].round().to(v.dtype)
            for k, v in rs.global_state.items()
        }
        if metrics is not None and "train-loss" in metrics:
            rs.metrics["train_loss"] = float(metrics["train-loss"])
        rs.metrics["num_examples"] = int(sum(int(r.content["metrics"]["num-examples"]) for r in rs.replies))
        collect_client_metrics(rs)


def client_metrics_of(reply: Message) -> dict[str, float]:
    """A reply's per-client diagnostics (timings, ABL isolation, poisoned counts) as plain floats."""
    record = reply.content.config_records.get("client-metrics", ConfigRecord())
    return {k: float(v) for k, v in record.items() if isinstance(v, (int, float))}


def collect_client_metrics(rs: RoundState) -> None:
    """Per-client diagnostics of the train replies into the round's metrics."""
    per_client = {str(r.metadata.src_node_id): client_metrics_of(r) for r in rs.replies}
    if any(per_client.values()):
        rs.metrics["client_metrics"] = per_client


class EvaluateCentral:
    """Clean accuracy and loss of the new global model on the held-out test set (server side), and the attack
    success rate on triggered non-target test images when an attack is configured."""

    name = "evaluate"

    def run(self, ctx: ServerContext, rs: RoundState) -> None:
        state = rs.new_state if rs.new_state is not None else rs.global_state
        model = ctx.new_model()
        model.load_state_dict(state)
        rs.metrics.update(ctx.task.evaluate(model))
