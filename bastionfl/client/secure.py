"""The client side of xMK-CKKS rounds: key share, encrypted update, verified decryption share.

The key share's secret lives only in this node's ``context.state`` (Flower keeps it in the SuperNode's memory and
hands it to each ClientApp process of the run); nothing secret is ever put in a reply.
"""

from __future__ import annotations

import time

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from bastionfl.config import RunConfig
from bastionfl.crypto import (
    AggregatedPublicKey,
    CrsSeed,
    DecryptionRequest,
    KeyShare,
    encrypt_vector,
    get_profile,
)
from bastionfl.tasks.vectorize import state_delta

__all__ = ["STATE_KEY", "blob_array", "array_blob", "handle_keygen", "handle_train", "handle_decrypt"]

STATE_KEY = "bastionfl.xmk"  # this node's key share (secret) and per-round bookkeeping, in context.state
BLOB_STYPE = "bastionfl.xmk.v1"


def blob_array(data: bytes) -> Array:
    """Opaque protocol bytes as a Flower Array (chunked in transit; a custom stype so it never reads as weights)."""
    return Array(dtype="uint8", shape=(len(data),), stype=BLOB_STYPE, data=data)


def array_blob(array: Array) -> bytes:
    """The bytes inside an Array made by :func:`blob_array`."""
    if array.stype != BLOB_STYPE:
        raise ValueError(f"expected a {BLOB_STYPE} array, got stype {array.stype!r}")
    return bytes(array.data)


def _state(context: Context) -> ConfigRecord:
    return context.state.config_records.get(STATE_KEY, ConfigRecord())


def _load_key(context: Context, cfg: RunConfig) -> KeyShare:
    saved = _state(context)
    if "key" not in saved:
        raise ValueError("no key share on this node for the current key epoch (it joined late or restarted)")
    return KeyShare.import_local(get_profile(cfg.he_profile), bytes(saved["key"]))


def handle_keygen(msg: Message, context: Context, cfg: RunConfig, num_examples: int) -> Message:
    """New key epoch: derive the CRS from the public seed, make a key share, keep the secret, return ``b_i``."""
    record = msg.content.config_records["xmk"]
    params = get_profile(cfg.he_profile)
    crs = CrsSeed.from_session(str(record["session"]), int(record["epoch"]))
    start = time.perf_counter()
    key = KeyShare.generate(params, crs)
    public = key.public_share().to_bytes()
    elapsed = time.perf_counter() - start
    context.state[STATE_KEY] = ConfigRecord({"key": key.export_local(), "epoch": int(record["epoch"])})
    content = RecordDict({
        "xmk": ArrayRecord({"public-share": blob_array(public)}),
        "metrics": MetricRecord({"num-examples": num_examples}),
        "client-metrics": ConfigRecord({"he_keygen_s": elapsed}),
    })
    return Message(content=content, reply_to=msg)


def handle_train(msg: Message, context: Context, cfg: RunConfig, train_fn) -> Message:  # noqa: ANN001
    """Accept the aggregated key, train locally, encrypt ``w_k · (new - global)`` with ``w_k = n_k / norm``."""
    params = get_profile(cfg.he_profile)
    key = _load_key(context, cfg)
    apk = AggregatedPublicKey.from_bytes(params, array_blob(msg.content["xmk"]["apk"]))
    key.accept(apk)  # refuses a key that does not contain this node's share
    norm = float(msg.content.config_records["xmk-config"]["weight-norm"])
    global_state = msg.content["arrays"].to_torch_state_dict()
    t0 = time.perf_counter()
    result = train_fn(global_state)
    t1 = time.perf_counter()
    weight = result.num_examples / norm
    update = state_delta(result.state_dict, global_state) * weight
    params.check_sum_fits(int(msg.content.config_records["xmk-config"]["participants"]), float(np.abs(update).max()))
    encrypted = encrypt_vector(apk, update)
    blob = encrypted.to_bytes()
    t2 = time.perf_counter()
    saved = _state(context)
    context.state[STATE_KEY] = ConfigRecord({**dict(saved), "key": key.export_local(), "own-c1": encrypted.c1_digest()})
    diagnostics = {**result.metrics, "train_s": t1 - t0, "he_encrypt_s": t2 - t1}
    content = RecordDict({
        "xmk": ArrayRecord({"update": blob_array(blob)}),
        "metrics": MetricRecord({"num-examples": result.num_examples, "weight": weight,
                                 "train-loss": result.train_loss}),
        "client-metrics": ConfigRecord(diagnostics),
    })
    return Message(content=content, reply_to=msg)


def handle_decrypt(msg: Message, context: Context, cfg: RunConfig) -> Message:
    """Check that the requested C1 is the sum of the listed c1 (own included), then return one smudged share."""
    params = get_profile(cfg.he_profile)
    key = _load_key(context, cfg)
    saved = _state(context)
    if "own-c1" not in saved:
        raise ValueError("this node uploaded no update in the current key epoch")
    request = DecryptionRequest.from_bytes(params, array_blob(msg.content["xmk"]["request"]))
    start = time.perf_counter()
    share = key.decryption_share(request, bytes(saved["own-c1"]))
    blob = share.to_bytes()
    elapsed = time.perf_counter() - start
    context.state[STATE_KEY] = ConfigRecord({**dict(saved), "key": key.export_local()})  # remembers used rounds
    content = RecordDict({
        "xmk": ArrayRecord({"share": blob_array(blob)}),
        "client-metrics": ConfigRecord({"he_share_s": elapsed}),
    })
    return Message(content=content, reply_to=msg)
