"""The names server and clients agree on: message types, stage names, record names and keys, node-state names.

Both ``bastionfl.server`` and ``bastionfl.client`` import these; neither imports the other. A name changes here or
nowhere.
"""

from __future__ import annotations

__all__ = ["MessageType", "Action", "Stage", "Record", "Key", "NodeState"]


class MessageType:
    """Flower message types (``<category>[.<action>]``) of a BastionFL round."""

    TRAIN = "train"
    EVALUATE = "evaluate"
    QUERY = "query"
    XMK_KEYGEN = "query.xmk_keygen"
    XMK_TRAIN = "train.xmk"
    XMK_DECRYPT = "query.xmk_decrypt"


class Action:
    """The action part of the custom message types, as the ClientApp registers them."""

    XMK_KEYGEN = "xmk_keygen"
    XMK_TRAIN = "xmk"
    XMK_DECRYPT = "xmk_decrypt"


class Stage:
    """Names of the server's round stages (metrics, byte counts and dropout counts are keyed by them)."""

    SAMPLE = "sample"
    ADMISSION = "admission"
    KEY_SETUP = "key_setup"
    TRAIN = "train"
    AGGREGATE = "aggregate"
    DECRYPT = "decrypt"
    FUSE = "fuse"
    REPAIR = "repair"
    EVALUATE = "evaluate"
    # where a secure-aggregation participant can drop out (metrics' ``dropouts`` keys; ``inject_dropout`` stages)
    KEYGEN = "keygen"
    UPLOAD = "upload"


class Record:
    """Names of the records inside a message's RecordDict."""

    CONFIG = "config"  # ConfigRecord: the client's view of the run configuration, plus Key.ROUND
    ARRAYS = "arrays"  # ArrayRecord: model weights
    METRICS = "metrics"  # MetricRecord: what FedAvg aggregates (Key.NUM_EXAMPLES, Key.TRAIN_LOSS)
    CLIENT_METRICS = "client-metrics"  # ConfigRecord: per-client diagnostics (keys differ between clients)
    INFO = "info"  # MetricRecord: a node's reply to a plain query
    XMK = "xmk"  # ConfigRecord (key setup) or ArrayRecord (blobs) of secure aggregation
    XMK_CONFIG = "xmk-config"  # ConfigRecord: the epoch's public figures sent with the train message


class Key:
    """Keys inside those records."""

    ROUND = "round"
    NUM_EXAMPLES = "num-examples"
    TRAIN_LOSS = "train-loss"
    LOSS = "loss"
    ACCURACY = "accuracy"
    PARTITION_ID = "partition-id"
    NUM_PARTITIONS = "num-partitions"
    WEIGHT = "weight"
    WEIGHT_NORM = "weight-norm"
    PARTICIPANTS = "participants"
    EPOCH = "epoch"
    SESSION = "session"
    PROFILE = "profile"
    PUBLIC_SHARE = "public-share"
    AGGREGATED_KEY = "apk"
    UPDATE = "update"
    REQUEST = "request"
    SHARE = "share"


class NodeState:
    """Names of the records a node keeps in its own ``context.state`` (they never leave the node)."""

    LOCAL = "bastionfl.local"  # defense state across rounds (ABL, BTU)
    XMK = "bastionfl.xmk"  # the key share (secret) and per-round bookkeeping
    TESTING = "bastionfl.testing"  # testing aids (injected dropouts already done)
