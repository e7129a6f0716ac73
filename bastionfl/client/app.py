"""The BastionFL ClientApp: train, evaluate and query actions over Flower's Message API.

The server sends the run configuration in every message (ConfigRecord ``config``), so a node needs no
local copy of it; only where its data lives may differ per node (``--node-config data-dir=...``).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from bastionfl.config import RunConfig, apply_overrides

__all__ = ["app", "config_from_message", "node_partition"]

from bastionfl.client.mods import CLIENT_MODS  # noqa: E402 - after the helpers it may use

app = ClientApp(mods=CLIENT_MODS)


def config_from_message(msg: Message, context: Context) -> RunConfig:
    """Rebuild the run configuration from the message; a node's own ``data-dir`` wins over the server's."""
    record = msg.content.config_records.get("config", ConfigRecord())
    values: dict[str, Any] = {k: v for k, v in record.items() if k != "round"}
    node_dir = context.node_config.get("data-dir")
    if node_dir:
        values["data_dir"] = str(node_dir)
    return apply_overrides(RunConfig(), values)


def node_partition(context: Context) -> tuple[int, int]:
    """This node's (partition-id, num-partitions) from its node config (set by the Simulation Engine or SuperNode)."""
    try:
        return int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    except KeyError as exc:
        raise ValueError(f"node config lacks {exc.args[0]!r}: start the SuperNode with --node-config "
                         "'partition-id=<i> num-partitions=<n>'") from None


Handler = Callable[[Message, Context], Message]


def replies_errors(handler: Handler) -> Handler:
    """Turn a user-facing error (bad config, missing data) into an error reply with a one-line reason."""

    @functools.wraps(handler)
    def wrapped(msg: Message, context: Context) -> Message:
        try:
            return handler(msg, context)
        except ValueError as exc:  # ConfigError, DatasetError, PartitionError and our own checks
            return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"{type(exc).__name__}: {exc}"), reply_to=msg)

    return wrapped


def _round(msg: Message) -> int:
    return int(msg.content.config_records.get("config", ConfigRecord()).get("round", 0))


@app.train()
@replies_errors
def train(msg: Message, context: Context) -> Message:
    """Plaintext local training: reply with the new weights and the example count."""
    from bastionfl.client.local import local_train

    cfg = config_from_message(msg, context)
    pid, nparts = node_partition(context)
    saved = context.state.config_records.get("bastionfl.local", ConfigRecord())
    result = local_train(cfg, msg.content["arrays"].to_torch_state_dict(), pid, nparts, _round(msg),
                         {k: str(v) for k, v in saved.items()})
    context.state["bastionfl.local"] = ConfigRecord(dict(result.node_state))
    metrics = MetricRecord({"num-examples": result.num_examples, "train-loss": result.train_loss})
    # per-client diagnostics vary by client; Flower's FedAvg wants identical metric keys, so they travel apart
    content = RecordDict({"arrays": ArrayRecord(result.state_dict), "metrics": metrics,
                          "client-metrics": ConfigRecord(dict(result.metrics))})
    return Message(content=content, reply_to=msg)


@app.evaluate()
@replies_errors
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on this node's partition."""
    from bastionfl.client.local import local_evaluate

    cfg = config_from_message(msg, context)
    pid, nparts = node_partition(context)
    loss, acc, n = local_evaluate(cfg, msg.content["arrays"].to_torch_state_dict(), pid, nparts)
    metrics = MetricRecord({"num-examples": n, "loss": loss, "accuracy": acc})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)


@app.query()
@replies_errors
def query(msg: Message, context: Context) -> Message:
    """Describe this node: its partition and example count (a cheap liveness and data check)."""
    from bastionfl.client.local import local_num_examples

    cfg = config_from_message(msg, context)
    pid, nparts = node_partition(context)
    info = MetricRecord({"partition-id": pid, "num-partitions": nparts,
                         "num-examples": local_num_examples(cfg, pid, nparts)})
    return Message(content=RecordDict({"info": info}), reply_to=msg)
