"""The client side of xMK-CKKS rounds: key share, encrypted update, verified decryption share.

The key share's secret lives only in this node's ``context.state`` (Flower keeps it in the SuperNode's memory and
hands it to each ClientApp process of the run); nothing secret is ever put in a reply.
"""

from __future__ import annotations

import time

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from bastionfl.config import RunConfig
from bastionfl.crypto import (
    AggregatedPublicKey,
    CrsSeed,
    DecryptionRequest,
    KeyShare,
    encrypt_vector,
    get_profile,
)
from bastionfl.protocol import Key, NodeState, ProtocolError, Record, array_blob, blob_array
from bastionfl.tasks.vectorize import state_delta

__all__ = ["handle_keygen", "handle_train", "handle_decrypt"]

STATE_KEY = NodeState.XMK  # this node's key share (secret) and per-round bookkeeping, in context.state
_KEY, _OWN_C1 = "key", "own-c1"


def _state(context: Context) -> ConfigRecord:
    return context.state.config_records.get(STATE_KEY, ConfigRecord())


def _load_key(context: Context, cfg: RunConfig) -> KeyShare:
    saved = _state(context)
    if _KEY not in saved:
        raise ProtocolError("no key share on this node for the current key epoch (it joined late or restarted)")
    return KeyShare.import_local(get_profile(str(cfg.secure.he_profile)), bytes(saved[_KEY]))


def handle_keygen(msg: Message, context: Context, cfg: RunConfig, num_examples: int) -> Message:
    """New key epoch: derive the CRS from the public seed, make a key share, keep the secret, return ``b_i``."""
    record = msg.content.config_records[Record.XMK]
    params = get_profile(str(cfg.secure.he_profile))
    crs = CrsSeed.from_session(str(record[Key.SESSION]), int(record[Key.EPOCH]))
    start = time.perf_counter()
    key = KeyShare.generate(params, crs)
    public = key.public_share().to_bytes()
    elapsed = time.perf_counter() - start
    context.state[STATE_KEY] = ConfigRecord({_KEY: key.export_local(), Key.EPOCH: int(record[Key.EPOCH])})
    content = RecordDict({
        Record.XMK: ArrayRecord({Key.PUBLIC_SHARE: blob_array(public)}),
        Record.METRICS: MetricRecord({Key.NUM_EXAMPLES: num_examples}),
        Record.CLIENT_METRICS: ConfigRecord({"he_keygen_s": elapsed}),
    })
    return Message(content=content, reply_to=msg)


def handle_train(msg: Message, context: Context, cfg: RunConfig, train_fn) -> Message:  # noqa: ANN001
    """Accept the aggregated key, train locally, encrypt ``w_k · (new - global)`` with ``w_k = n_k / norm``."""
    params = get_profile(str(cfg.secure.he_profile))
    key = _load_key(context, cfg)
    apk = AggregatedPublicKey.from_bytes(params, array_blob(msg.content[Record.XMK][Key.AGGREGATED_KEY]))
    key.accept(apk)  # refuses a key that does not contain this node's share
    xmk_config = msg.content.config_records[Record.XMK_CONFIG]
    norm = float(xmk_config[Key.WEIGHT_NORM])
    global_state = msg.content[Record.ARRAYS].to_torch_state_dict()
    t0 = time.perf_counter()
    result = train_fn(global_state)
    t1 = time.perf_counter()
    weight = result.num_examples / norm
    update = state_delta(result.state_dict, global_state) * weight
    params.check_sum_fits(int(xmk_config[Key.PARTICIPANTS]), float(np.abs(update).max()))
    encrypted = encrypt_vector(apk, update)
    blob = encrypted.to_bytes()
    t2 = time.perf_counter()
    saved = _state(context)
    context.state[STATE_KEY] = ConfigRecord({**dict(saved), _KEY: key.export_local(), _OWN_C1: encrypted.c1_digest()})
    diagnostics = {**result.metrics, "train_s": t1 - t0, "he_encrypt_s": t2 - t1}
    content = RecordDict({
        Record.XMK: ArrayRecord({Key.UPDATE: blob_array(blob)}),
        Record.METRICS: MetricRecord({Key.NUM_EXAMPLES: result.num_examples, Key.WEIGHT: weight,
                                      Key.TRAIN_LOSS: result.train_loss}),
        Record.CLIENT_METRICS: ConfigRecord(diagnostics),
    })
    return Message(content=content, reply_to=msg)


def handle_decrypt(msg: Message, context: Context, cfg: RunConfig) -> Message:
    """Check that the requested C1 is the sum of the listed c1 (own included), then return one smudged share."""
    params = get_profile(str(cfg.secure.he_profile))
    start = time.perf_counter()  # the stage's whole cost on the client: loading, parsing, checking, sharing
    key = _load_key(context, cfg)
    saved = _state(context)
    if _OWN_C1 not in saved:
        raise ProtocolError("this node uploaded no update in the current key epoch")
    request = DecryptionRequest.from_bytes(params, array_blob(msg.content[Record.XMK][Key.REQUEST]))
    share = key.decryption_share(request, bytes(saved[_OWN_C1]))
    blob = share.to_bytes()
    elapsed = time.perf_counter() - start
    context.state[STATE_KEY] = ConfigRecord({**dict(saved), _KEY: key.export_local()})  # remembers used rounds
    content = RecordDict({
        Record.XMK: ArrayRecord({Key.SHARE: blob_array(blob)}),
        Record.CLIENT_METRICS: ConfigRecord({"he_share_s": elapsed}),
    })
    return Message(content=content, reply_to=msg)
