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
    XMK_KEYGEN = "query.xmk_keygen"  # K1: the epoch's opening out, key setup replies in
    XMK_KEY_PROPOSAL = "query.xmk_key_proposal"  # K2 (signed threat models): roster and key out, responses in
    XMK_TRAIN = "train.xmk"  # the model (and the epoch's last key message) out, the upload (or commitment) in
    XMK_REVEAL = "query.xmk_reveal"  # malicious-colluding: the commitment list out, the ciphertexts in
    XMK_CONSISTENCY = "query.xmk_consistency"  # signed threat models: the round proposal out, signatures in
    XMK_DECRYPT = "query.xmk_decrypt"  # the confirmation (or proposal) out, decryption shares in


class Action:
    """The action part of the custom message types, as the ClientApp registers them."""

    XMK_KEYGEN = "xmk_keygen"
    XMK_KEY_PROPOSAL = "xmk_key_proposal"
    XMK_TRAIN = "xmk"
    XMK_REVEAL = "xmk_reveal"
    XMK_CONSISTENCY = "xmk_consistency"
    XMK_DECRYPT = "xmk_decrypt"


class Stage:
    """Names of the server's round stages (metrics, byte counts and dropout counts are keyed by them)."""

    SAMPLE = "sample"
    ADMISSION = "admission"
    KEY_SETUP = "key_setup"
    TRAIN = "train"
    REVEAL = "reveal"
    CONSISTENCY = "consistency"
    AGGREGATE = "aggregate"
    DECRYPT = "decrypt"
    FUSE = "fuse"
    CHECK = "check"
    CLIP = "clip"
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
    THREAT_MODEL = "threat-model"
    OPENING = "opening"  # K1 server -> client: the epoch's opening (CRS, threat model)
    KEY_REPLY = "key-reply"  # K1 client -> server: public share (or its commitment), epoch verification key
    VERIFICATION_KEY = "vk"  # K1 client -> server: the epoch verification key, for the Home Authority's roster
    ENDORSEMENT = "endorsement"  # K1 client -> server: the client's endorsement of that key, for the HA
    PROPOSAL = "proposal"  # K2 / D1 server -> client: the epoch's roster and key, or the round's proposal
    ROSTER = "roster"  # K2 server -> client: the HA-signed roster of the epoch
    KEY_RESPONSE = "key-response"  # K2 client -> server
    KEY_MESSAGE = "key-message"  # with the epoch's first train message: the last key-setup message
    DEALING = "share-dealing"  # t-of-n, with the K2 reply: the member's sealed Shamir shares for the others
    DEALT = "dealt-shares"  # t-of-n, with the key message: the sealed shares addressed to this member
    UPLOAD = "upload"  # the encrypted update with its commitment (or the commitment alone)
    COMMITMENTS = "commitments"  # malicious-colluding: the round's frozen commitment list
    SIGNATURE = "signature"  # a member's signature on the round transcript (with its sketch)
    CONFIRMATION = "confirmation"  # D2 server -> client: every signature, and C1 or every c1
    SHARE = "share"


class NodeState:
    """Names of the records a node keeps in its own ``context.state`` (they never leave the node)."""

    LOCAL = "bastionfl.local"  # defense state across rounds (ABL, BTU)
    XMK = "bastionfl.xmk"  # the key share (secret) and per-round bookkeeping
    TESTING = "bastionfl.testing"  # testing aids (injected dropouts already done)
