"""The BastionFL ClientApp: train, evaluate and query actions over Flower's Message API.

The server sends the client's view of the run configuration in every message (ConfigRecord ``config``, only the
settings a client needs), so a node needs no local copy of it; only where its data lives may differ per node
(``--node-config data-dir=...``). Message types, record names and keys come from ``bastionfl.protocol``.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable

import torch  # noqa: F401 - Flower's ArrayRecord.to_torch_state_dict needs torch imported
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from bastionfl.config import ConfigError, RunConfig
from bastionfl.errors import BastionFLError
from bastionfl.protocol import Action, Key, NodeState, Record, Stage, config_from_record, round_of

__all__ = ["app", "PinnedClientApp", "config_from_message", "node_partition"]

from bastionfl.client.mods import CLIENT_MODS  # noqa: E402 - after the helpers it may use

app = ClientApp(mods=CLIENT_MODS)


class PinnedClientApp(ClientApp):
    """The BastionFL ClientApp with node-config pins set by whoever runs the nodes (the simulation's user, who is
    every node's operator there): what a SuperNode operator passes with ``--node-config``, e.g. ``threat-model``."""

    def __init__(self, pins: dict[str, str]) -> None:
        super().__init__()
        self.pins = dict(pins)

    def __call__(self, message: Message, context: Context) -> Message:
        for key, value in self.pins.items():
            context.node_config.setdefault(key, value)
        return app(message, context)


def config_from_message(msg: Message, context: Context) -> RunConfig:
    """Rebuild the run configuration from the message; a node's own ``data-dir`` wins over the server's."""
    record = msg.content.config_records.get(Record.CONFIG, ConfigRecord())
    node_dir = context.node_config.get("data-dir")
    return config_from_record(record, {"data_dir": str(node_dir)} if node_dir else None)


def node_partition(context: Context) -> tuple[int, int]:
    """This node's (partition-id, num-partitions) from its node config (set by the Simulation Engine or SuperNode)."""
    try:
        return int(context.node_config[Key.PARTITION_ID]), int(context.node_config[Key.NUM_PARTITIONS])
    except KeyError as exc:
        raise ConfigError(f"node config lacks {exc.args[0]!r}: start the SuperNode with --node-config "
                         "'partition-id=<i> num-partitions=<n>'") from None


Handler = Callable[[Message, Context], Message]


def replies_errors(handler: Handler) -> Handler:
    """Turn a user-facing error (bad config, missing data) into an error reply with a one-line reason."""

    @functools.wraps(handler)
    def wrapped(msg: Message, context: Context) -> Message:
        try:
            return handler(msg, context)
        except (ValueError, BastionFLError) as exc:  # bad config or data, refused protocol step: a one-line reason
            return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"{type(exc).__name__}: {exc}"), reply_to=msg)

    return wrapped


def _round(msg: Message) -> int:
    return round_of(msg.content.config_records.get(Record.CONFIG))


def _train_locally(cfg: RunConfig, context: Context, global_state: dict, server_round: int) -> Any:
    """Local training with this node's persisted defense state (ABL/BTU) restored and saved back."""
    from bastionfl.client.training import local_train

    pid, nparts = node_partition(context)
    saved = {k: str(v) for k, v in context.state.config_records.get(NodeState.LOCAL, ConfigRecord()).items()}
    store = str(context.node_config.get("state-dir", ""))  # the node operator's folder, never the server's
    if not saved and store:  # a resumed run: the process that held this node's state is gone
        from bastionfl.client.state_store import load_client_state

        saved = load_client_state(store, pid, server_round)
    result = local_train(cfg, global_state, pid, nparts, server_round, saved)
    context.state[NodeState.LOCAL] = ConfigRecord(dict(result.node_state))
    if store and result.node_state:
        from bastionfl.client.state_store import save_client_state

        save_client_state(store, pid, server_round, result.node_state)
    return result


class InjectedDropout(BastionFLError):
    """A dropout requested by the ``inject_dropout`` testing aid."""


def _maybe_vanish(cfg: RunConfig, stage: str, msg: Message, context: Context) -> None:
    """``dropout_rate``: vanish at ``stage`` with that probability, drawn from (seed, round, stage, partition) so
    that a node answers every message of one stage of one round alike (a simulated flaky fleet)."""
    rate = cfg.runtime.dropout_rate
    stages = {x.strip() for x in cfg.runtime.dropout_stages.split(",")}
    if rate <= 0 or stage not in stages:
        return
    import hashlib

    label = f"{cfg.federation.seed}:{_round(msg)}:{stage}:{node_partition(context)[0]}".encode()
    draw = int.from_bytes(hashlib.sha256(b"bastionfl/dropout\x00" + label).digest()[:8], "little") / 2.0**64
    if draw < rate:
        raise InjectedDropout(f"simulated dropout at {stage} of round {_round(msg)}")


def _maybe_drop(cfg: RunConfig, stage: str, msg: Message, context: Context) -> None:
    """Fail once at ``stage`` of the round named by ``inject_dropout`` (a dropout for tests and demos)."""
    _maybe_vanish(cfg, stage, msg, context)
    spec = cfg.runtime.inject_dropout
    if not spec:
        return
    try:
        want_stage, want_round, want_pid = spec.split(":")
        target = (want_stage, int(want_round), int(want_pid))
    except ValueError:
        raise ConfigError(f"config key 'inject_dropout': expected stage:round:partition-id, got {spec!r}") from None
    marker = f"dropped:{spec}"
    done = context.state.config_records.get(NodeState.TESTING, ConfigRecord())
    if (stage, _round(msg), node_partition(context)[0]) == target and marker not in done:
        context.state[NodeState.TESTING] = ConfigRecord({**dict(done), marker: True})
        raise InjectedDropout(f"injected dropout at {stage} of round {target[1]}")


@app.train()
@replies_errors
def train(msg: Message, context: Context) -> Message:
    """Plaintext local training: reply with the new weights and the example count."""
    cfg = config_from_message(msg, context)
    _maybe_drop(cfg, Stage.TRAIN, msg, context)
    start = time.perf_counter()
    result = _train_locally(cfg, context, msg.content[Record.ARRAYS].to_torch_state_dict(), _round(msg))
    result.metrics["train_s"] = time.perf_counter() - start
    metrics = MetricRecord({Key.NUM_EXAMPLES: result.num_examples, Key.TRAIN_LOSS: result.train_loss})
    # per-client diagnostics vary by client; Flower's FedAvg wants identical metric keys, so they travel apart
    content = RecordDict({Record.ARRAYS: ArrayRecord(result.state_dict), Record.METRICS: metrics,
                          Record.CLIENT_METRICS: ConfigRecord(dict(result.metrics))})
    return Message(content=content, reply_to=msg)


@app.evaluate()
@replies_errors
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on this node's partition."""
    from bastionfl.client.training import local_evaluate

    cfg = config_from_message(msg, context)
    pid, nparts = node_partition(context)
    loss, acc, n = local_evaluate(cfg, msg.content[Record.ARRAYS].to_torch_state_dict(), pid, nparts)
    metrics = MetricRecord({Key.NUM_EXAMPLES: n, Key.LOSS: loss, Key.ACCURACY: acc})
    return Message(content=RecordDict({Record.METRICS: metrics}), reply_to=msg)


@app.query()
@replies_errors
def query(msg: Message, context: Context) -> Message:
    """Describe this node: its partition and example count (a cheap liveness and data check)."""
    from bastionfl.client.training import local_num_examples

    cfg = config_from_message(msg, context)
    pid, nparts = node_partition(context)
    info = MetricRecord({Key.PARTITION_ID: pid, Key.NUM_PARTITIONS: nparts,
                         Key.NUM_EXAMPLES: local_num_examples(cfg, pid, nparts)})
    return Message(content=RecordDict({Record.INFO: info}), reply_to=msg)


@app.query(Action.XMK_KEYGEN)
@replies_errors
def xmk_keygen(msg: Message, context: Context) -> Message:
    """Secure aggregation, key epoch: return this node's public key share (the secret stays here)."""
    from bastionfl.client.secure import handle_keygen
    from bastionfl.client.training import local_num_examples

    cfg = config_from_message(msg, context)
    _maybe_drop(cfg, Stage.KEYGEN, msg, context)
    pid, nparts = node_partition(context)
    return handle_keygen(msg, context, cfg, local_num_examples(cfg, pid, nparts))


@app.query(Action.XMK_KEY_PROPOSAL)
@replies_errors
def xmk_key_proposal(msg: Message, context: Context) -> Message:
    """Secure aggregation, key setup (signed threat models): check the roster, sketch or reveal the public share."""
    from bastionfl.client.secure import handle_key_proposal

    cfg = config_from_message(msg, context)
    _maybe_drop(cfg, Stage.KEYGEN, msg, context)
    return handle_key_proposal(msg, context, cfg)


@app.train(Action.XMK_TRAIN)
@replies_errors
def xmk_train(msg: Message, context: Context) -> Message:
    """Secure aggregation, train: local training, then the update encrypted under the verified aggregated key."""
    from bastionfl.client.secure import handle_train

    cfg = config_from_message(msg, context)
    _maybe_drop(cfg, Stage.TRAIN, msg, context)
    return handle_train(msg, context, cfg, lambda state: _train_locally(cfg, context, state, _round(msg)))


@app.query(Action.XMK_REVEAL)
@replies_errors
def xmk_reveal(msg: Message, context: Context) -> Message:
    """Secure aggregation, malicious-colluding: reveal the ciphertexts once every commitment is fixed."""
    from bastionfl.client.secure import handle_reveal

    cfg = config_from_message(msg, context)
    _maybe_drop(cfg, Stage.REVEAL, msg, context)
    return handle_reveal(msg, context, cfg)


@app.query(Action.XMK_CONSISTENCY)
@replies_errors
def xmk_consistency(msg: Message, context: Context) -> Message:
    """Secure aggregation, signed threat models: check the round and sign its transcript."""
    from bastionfl.client.secure import handle_consistency

    cfg = config_from_message(msg, context)
    _maybe_drop(cfg, Stage.CONSISTENCY, msg, context)
    return handle_consistency(msg, context, cfg)


@app.query(Action.XMK_DECRYPT)
@replies_errors
def xmk_decrypt(msg: Message, context: Context) -> Message:
    """Secure aggregation, decrypt: verify the aggregate and return one smudged decryption share."""
    from bastionfl.client.secure import handle_decrypt

    cfg = config_from_message(msg, context)
    _maybe_drop(cfg, Stage.DECRYPT, msg, context)
    return handle_decrypt(msg, context, cfg)
