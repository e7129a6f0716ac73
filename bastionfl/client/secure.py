"""The client side of xMK-CKKS rounds: one handler per protocol message, each a step of ``crypto.ClientEpoch``.

The epoch's state (key share secret, epoch signing key, roster, per-round records that refuse a second share) lives
only in this node's ``context.state``, exported after every step, because Flower may run each message in a fresh
ClientApp process; nothing secret is ever put in a reply. What the client refuses is the crypto engine's
``ClientPolicy`` (threat model, minimum members and uploads, share cap); with pseudonym admission in a signed threat
model it also requires the Home Authority's signed roster and checks it itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from bastionfl.client.memory_guard import check_memory_budget, memory_guard
from bastionfl.config import Auth, RunConfig, ThreatModel
from bastionfl.crypto import ClientEpoch, ClientPolicy, EpochPolicy, Params, get_profile
from bastionfl.crypto import ThreatModel as CryptoThreatModel
from bastionfl.protocol import Key, NodeState, ProtocolError, Record, array_blob, blob_array
from bastionfl.tasks.vectorize import state_delta, state_to_vector

__all__ = ["handle_keygen", "handle_key_proposal", "handle_train", "handle_reveal", "handle_consistency",
           "handle_decrypt", "client_policy", "model_digest", "require_state_folder", "PINS"]

log = logging.getLogger("bastionfl.client")

STATE_KEY = NodeState.XMK  # this node's epoch (secrets inside), in context.state only
_EPOCH, _NUMBER, _TAG = "epoch", "number", "tag"


def _params(cfg: RunConfig) -> Params:
    return get_profile(str(cfg.secure.he_profile))


def owns_process() -> bool:
    """True where this ClientApp runs in a process of its own (Flower's ``flwr-clientapp``, one per message)."""
    return Path(sys.argv[0]).name.startswith("flwr-clientapp")


@contextlib.contextmanager
def guarded(stage: str, need_mb: float = 0.0) -> Iterator[None]:
    """A crypto step: refused up front (``StageOutOfMemory``, an error reply) when even its own arrays cannot fit;
    where the ClientApp owns its process, an allocation failure inside SEAL is reported and ends the process at
    once (exit 75: the node drops out of the round) instead of spinning while the failed step is unwound. In a
    simulation the process hosts other nodes too: the failure is raised there."""
    if need_mb > 0:
        check_memory_budget(stage, need_mb)
    with memory_guard(stage) if owns_process() else contextlib.nullcontext():
        yield


def _arrays_mb(params: Params, length: int, components: int) -> float:
    """MiB of ``components`` polynomials per ciphertext of a vector of ``length`` reals (the step's lower bound)."""
    k = -(-length // params.floats_per_ciphertext)
    return k * components * len(params.data_bits) * params.poly_modulus_degree * 8 / 2**20


def _certified(cfg: RunConfig) -> bool:
    return cfg.admission.mode is Auth.PSEUDONYM and cfg.secure.threat_model is not ThreatModel.HONEST_BUT_CURIOUS


PINS = ("threat-model", "min-members", "min-uploads", "max-shares", "require-roster",
        "threshold")  # the node's --node-config


def _pin(node_config: Mapping[str, object] | None, key: str) -> str | None:
    value = (node_config or {}).get(key)
    return None if value is None or str(value) == "" else str(value)


def client_policy(cfg: RunConfig, node_config: Mapping[str, object] | None = None) -> ClientPolicy:
    """What this client refuses whatever the server asks. ``cfg`` travels in the server's messages, so a setting the
    node operator pins in its own ``--node-config`` wins: ``threat-model`` must equal the server's (a malicious
    server would otherwise downgrade the node to honest-but-curious, where a constant C1 returns the key), the pinned
    ``min-members`` / ``min-uploads`` are floors, ``max-shares`` a ceiling, and ``require-roster = true`` demands the
    Home Authority's signed roster even when the server claims to run without one. Unpinned, the server's values
    hold, except that an unpinned node never takes an honest-but-curious epoch (the downgrade that returns the key)
    nor t-of-n decryption; a pinned ``threshold`` must equal the server's."""
    from bastionfl.config.checks import threshold_rule

    threat = str(cfg.secure.threat_model)
    pinned = _pin(node_config, "threat-model")
    if pinned is not None and pinned != threat:
        raise ProtocolError(f"the server asks for a {threat} epoch; this node is pinned to {pinned}")
    if pinned is None and cfg.secure.threat_model is ThreatModel.HONEST_BUT_CURIOUS:
        raise ProtocolError("the server asks for an honest-but-curious epoch, which a node accepts only when its "
                            "operator pins it (--node-config threat-model=honest-but-curious): a malicious server "
                            "would otherwise downgrade the node and recover its key from one share")
    _check_threshold(cfg, _pin(node_config, "threshold"))
    try:
        floors = [max(int(_pin(node_config, k) or 0), v)
                  for k, v in (("min-members", cfg.secure.min_members), ("min-uploads", cfg.secure.min_uploads))]
        cap_pin = _pin(node_config, "max-shares")
    except ValueError:
        raise ProtocolError("node config: min-members and min-uploads must be integers") from None
    policy = EpochPolicy(cfg.secure.key_epoch_rounds).client_policy(
        CryptoThreatModel(threat), floors[0], floors[1],
        require_certified_roster=_certified(cfg) or (_pin(node_config, "require-roster") or "").lower() == "true",
        threshold=threshold_rule(cfg))
    if cap_pin is not None:
        try:
            policy = replace(policy, max_shares=min(policy.max_shares, int(cap_pin)))
        except ValueError:
            raise ProtocolError("node config: max-shares must be an integer") from None
    return policy


def _check_threshold(cfg: RunConfig, pinned: str | None) -> None:
    """Decryption by fewer than all members only where the operator pinned that threshold: a server that lowers it
    lowers ``c_max = min(t - 1, 2t - n - 1)`` (t = n/2 + 1: one colluder lets two upload sets of one round be
    decrypted, and their difference is an update)."""
    asked = float(cfg.secure.threshold)
    if asked == 1.0:  # every member decrypts: the strongest rule, whatever the pin
        return
    if pinned is None:
        raise ProtocolError(f"the server asks for t-of-n decryption (threshold {asked:g}), which a node accepts "
                            "only when its operator pins it (--node-config threshold=...)")
    try:
        allowed = float(pinned)
    except ValueError:
        raise ProtocolError("node config: threshold must be a number") from None
    if allowed != asked:
        raise ProtocolError(f"the server asks for threshold {asked:g}; this node is pinned to {allowed:g}")


def _save(context: Context, epoch: ClientEpoch, number: int, *, new_epoch: bool = False) -> None:
    """The epoch into the node's state: an Array (Flower moves arrays between SuperNode and ClientApp in chunks;
    a malicious-colluding client holds its ciphertexts here until it reveals them). With a state folder, only if
    the state this step started from is the one the node stored last (``state_store.advance_state_tag``): Flower
    hands two messages sent together the same stored state, and the second step would fork the share records.
    A new epoch replaces the state whatever it was (a refused stale state must not lock the node out for good)."""
    tag = os.urandom(16).hex()
    where = _spent_store(context)
    if where is not None:
        from bastionfl.client.state_store import advance_state_tag

        meta = context.state.config_records.get(STATE_KEY + ".meta")
        held = None if new_epoch or meta is None or _TAG not in meta else str(meta[_TAG])
        if not advance_state_tag(*where, held, tag):
            raise ProtocolError("this node's key-epoch state changed since this message's ClientApp took its copy "
                                "(two messages at once, or a stale state): refused, nothing leaves")
    context.state[STATE_KEY] = ArrayRecord({_EPOCH: blob_array(epoch.export_local())})
    context.state[STATE_KEY + ".meta"] = ConfigRecord({_NUMBER: number, _TAG: tag})


_SPENT = STATE_KEY + ".spent"  # node-level, kept across key epochs: updates already in a decryptable transcript


def _spent_store(context: Context) -> tuple[str, int] | None:
    """The node operator's state folder and this node's partition, where the spent digests outlive the process."""
    store = str(context.node_config.get("state-dir", ""))
    if not store:
        return None
    from bastionfl.client.app import node_partition

    return store, node_partition(context)[0]


def require_state_folder(cfg: RunConfig, context: Context) -> None:
    """Refuse a signed epoch (malicious, malicious-colluding; N-of-N or t-of-n) on a node without a state folder:
    Flower hands two messages sent together the same stored context, and only the folder's tag
    (``state_store.advance_state_tag``) stops the second from forking every "once" record (one transcript and one
    share per round, the attempts, the share cap, the spent results), which gives a malicious server two decrypted
    upload sets of one round or two shares on one ciphertext. Honest-but-curious trusts the server to send one
    message at a time (and a constant C1 already returns the key there), so it runs without one."""
    if cfg.secure.threat_model is ThreatModel.HONEST_BUT_CURIOUS or _spent_store(context) is not None:
        return
    raise ProtocolError(f"this node has no state folder and refuses a {cfg.secure.threat_model} epoch: without one a "
                        "malicious server can fork its share records; start the SuperNode with --node-config "
                        "state-dir=<folder>")


def _spent(context: Context) -> tuple[list[bytes], list[bytes]]:
    """Released and pending digests: the node state's, united with the state folder's (a restart empties the first)."""
    rec = context.state.config_records.get(_SPENT)
    released, pending = ([], []) if rec is None else \
        ([d for d in rec.get("released", []) if d], [d for d in rec.get("pending", []) if d])
    where = _spent_store(context)
    if where is not None:
        from bastionfl.client.state_store import load_spent

        disk_released, disk_pending = load_spent(*where)
        released += [d for d in disk_released if d not in released]
        pending += [d for d in disk_pending if d not in pending and d not in released]
    return released, pending


def _store_spent(context: Context, released: list[bytes], pending: list[bytes]) -> None:
    """Into the node state and, with a state folder, onto disk (fsync) before the upload or share leaves."""
    context.state[_SPENT] = ConfigRecord({"released": released or [b""], "pending": pending or [b""]})
    where = _spent_store(context)
    if where is not None:
        from bastionfl.client.state_store import save_spent

        save_spent(*where, released, pending)


def _check_fresh_update(context: Context, update: np.ndarray, training_round: str) -> None:
    """Refuse to upload a training result (its unweighted delta) that was already part of a transcript this node let
    be decrypted (under any key epoch or weight), or any result of a training round (seed, round) it released one
    for, and remember both as pending. A server that decrypts a round and then "retries" it without one member would
    otherwise get the same updates of the others again and subtract the two sums; training is seeded by (seed,
    round, partition), so a global model nudged by 1e-7 gives updates within ~1e-6 of the first: not the same bytes,
    the same leak."""
    digests = [hashlib.sha256(b"bastionfl/xmk/update\x00" + np.ascontiguousarray(update).tobytes()).digest(),
               hashlib.sha256(b"bastionfl/xmk/training-round\x00" + training_round.encode()).digest()]
    released, pending = _spent(context)
    if any(d in released for d in digests):
        raise ProtocolError(f"this node already released an update of training round {training_round} (seed:round) "
                            "for decryption; it never uploads another (a retried round would let the server subtract "
                            "two sums)")
    _store_spent(context, released, [*pending, *(d for d in digests if d not in pending)])


def _release_pending(context: Context) -> None:
    """The uploads of this node so far may now be decrypted: never upload any of them again."""
    released, pending = _spent(context)
    _store_spent(context, [*released, *pending], [])


def _load(context: Context, cfg: RunConfig, msg: Message) -> tuple[ClientEpoch, int]:
    """This node's epoch; refuses a message of another key epoch than the one it holds."""
    saved = context.state.array_records.get(STATE_KEY)
    meta = context.state.config_records.get(STATE_KEY + ".meta")
    require_state_folder(cfg, context)  # key setup refused already; no epoch held here is used without one
    if saved is None or meta is None or _EPOCH not in saved:
        raise ProtocolError("no key epoch on this node (it joined late or restarted): it sits this epoch out")
    number = int(meta[_NUMBER])
    asked = int(msg.content.config_records[Record.XMK_CONFIG][Key.EPOCH])
    if asked != number:
        raise ProtocolError(f"message for key epoch {asked}; this node holds epoch {number}")
    return ClientEpoch.import_local(_params(cfg), array_blob(saved[_EPOCH])), number


def _blob(msg: Message, key: str) -> bytes:
    return array_blob(msg.content[Record.XMK][key])


def _finish_key_setup(epoch: ClientEpoch, msg: Message) -> None:
    """Take the epoch's last key message if this one carries it and the epoch is not ready yet: the proposal with
    the key (honest-but-curious) or the confirmation (signed threat models; the aggregated key is verified here)."""
    if Key.KEY_MESSAGE not in msg.content[Record.XMK]:
        return
    if epoch.stage != "ready":
        data = _blob(msg, Key.KEY_MESSAGE)
        if epoch.stage == "opened":
            epoch.on_key_proposal(data, None)
        else:
            epoch.on_key_confirmation(data)
    if epoch.threshold is not None and not epoch.threshold.ready and Key.DEALT in msg.content[Record.XMK]:
        epoch.on_dealt_shares(_blob(msg, Key.DEALT))  # t-of-n: this member's threshold key share


def model_digest(state: dict) -> bytes:
    """SHA-256 of a model's tensors (names, shapes, float64 values): what the members of an upload set must share."""
    h = hashlib.sha256(b"bastionfl/xmk/model\x00")
    for name, tensor in state.items():
        h.update(f"{name}:{tuple(tensor.shape)}\x00".encode())
        h.update(state_to_vector({name: tensor}).astype("<f8").tobytes())
    return h.digest()


def _reply(msg: Message, blobs: dict[str, bytes], metrics: dict[str, float] | None = None,
           diagnostics: dict[str, float] | None = None) -> Message:
    content = RecordDict({Record.XMK: ArrayRecord({k: blob_array(v) for k, v in blobs.items()})})
    if metrics is not None:
        content[Record.METRICS] = MetricRecord(metrics)
    if diagnostics:
        content[Record.CLIENT_METRICS] = ConfigRecord(diagnostics)
    return Message(content=content, reply_to=msg)


def _certified_keys(cfg: RunConfig, context: Context, msg: Message, epoch: ClientEpoch,
                    number: int) -> frozenset[bytes] | None:
    """The roster the Home Authority signed for this epoch, checked here (None when no authority is used)."""
    if not _certified(cfg):
        return None
    from bastionfl.auth import AuthError, MalformedInput, SignedRoster
    from bastionfl.client.auth_mod import roster_key

    key = roster_key(context)
    if key is None:
        raise ProtocolError("this node's credential has no Home Authority roster key: enrol it again")
    server_id = str(context.node_config.get("auth-server-id") or cfg.admission.server_id)
    try:
        roster = SignedRoster.from_bytes(_blob(msg, Key.ROSTER))
        return roster.verify(key, server_id=server_id, run_id=int(context.run_id), key_epoch=number,
                             min_members=cfg.secure.min_members, own_key=epoch.verification_key)
    except (AuthError, MalformedInput, KeyError) as exc:
        raise ProtocolError(f"epoch roster refused: {exc}") from None


def handle_keygen(msg: Message, context: Context, cfg: RunConfig, num_examples: int) -> Message:
    """K1: open the epoch (key share, epoch signing key); with a Home Authority, endorse the epoch key for it."""
    start = time.perf_counter()
    meta = msg.content.config_records[Record.XMK_CONFIG]
    if str(meta[Key.THREAT_MODEL]) != str(cfg.secure.threat_model):
        raise ProtocolError(f"the server asks for a {meta[Key.THREAT_MODEL]} epoch; this client runs "
                            f"{cfg.secure.threat_model}")
    number = int(meta[Key.EPOCH])
    policy = client_policy(cfg, context.node_config)
    try:
        require_state_folder(cfg, context)
    except ProtocolError as exc:
        log.error("key setup refused: %s", exc)
        raise
    with guarded("key_setup"):
        epoch, reply = ClientEpoch.open(_params(cfg), _blob(msg, Key.OPENING), policy)
    blobs = {Key.KEY_REPLY: reply}
    if _certified(cfg):
        from bastionfl.auth.roster import endorse_epoch_key
        from bastionfl.client.auth_mod import current_session

        session = current_session(context)
        vk = epoch.verification_key
        if session is None or session.endorse_key is None or vk is None:
            raise ProtocolError("no admission session of this round to endorse the epoch key with")
        blobs[Key.VERIFICATION_KEY] = vk
        blobs[Key.ENDORSEMENT] = endorse_epoch_key(session.endorse_key, session.server_id, int(context.run_id),
                                                   number, vk)
    _save(context, epoch, number, new_epoch=True)
    return _reply(msg, blobs, {Key.NUM_EXAMPLES: num_examples}, {"he_keygen_s": time.perf_counter() - start})


def handle_key_proposal(msg: Message, context: Context, cfg: RunConfig) -> Message:
    """K2: check the roster (the Home Authority's signature where used) and answer with a signed key sketch or the
    revealed share."""
    start = time.perf_counter()
    with guarded("key_setup"):
        epoch, number = _load(context, cfg, msg)
        response = epoch.on_key_proposal(_blob(msg, Key.PROPOSAL), _certified_keys(cfg, context, msg, epoch, number))
    if response is None:
        raise ProtocolError("the key proposal needs no answer in this threat model")
    blobs = {Key.KEY_RESPONSE: response}
    if epoch.threshold is not None:
        blobs[Key.DEALING] = epoch.deal_shares()  # t-of-n: Shamir shares of this key, sealed per member
    _save(context, epoch, number)
    return _reply(msg, blobs, diagnostics={"he_key_check_s": time.perf_counter() - start})


def handle_train(msg: Message, context: Context, cfg: RunConfig,
                 train_fn: Callable[[dict], object]) -> Message:  # noqa: ANN001
    """Finish key setup if this is the epoch's first round, train, and upload ``w_k · (new - global)`` encrypted
    (``w_k = n_k / norm``) with its signed commitment, which declares ``n_k`` too (malicious-colluding: the
    commitment alone)."""
    from bastionfl.protocol import round_of

    t0 = time.perf_counter()
    with guarded("key_setup"):
        epoch, number = _load(context, cfg, msg)
        _finish_key_setup(epoch, msg)
    meta = msg.content.config_records[Record.XMK_CONFIG]
    norm = float(meta[Key.WEIGHT_NORM])
    if not (np.isfinite(norm) and norm > 0):
        raise ProtocolError(f"the server sent a weight norm of {norm!r}; it must be a finite positive number")
    global_state = msg.content[Record.ARRAYS].to_torch_state_dict()
    t1 = time.perf_counter()
    result = train_fn(global_state)
    t2 = time.perf_counter()
    weight = result.num_examples / norm  # type: ignore[attr-defined]
    delta = state_delta(result.state_dict, global_state)  # type: ignore[attr-defined]
    number_trained = round_of(msg.content.config_records.get(Record.CONFIG))
    _check_fresh_update(context, np.asarray(delta), f"{cfg.federation.seed}:{number_trained}")  # unweighted delta
    update = delta * weight
    # the own c1 comes back with the round's proposal: the node's state stays small between messages. The example
    # count and the digest of the model trained are committed with the weight: every member refuses an upload set
    # whose weights are not one multiple of the counts (a norm sent per node would weight one update 1 and the
    # others ~0) or whose members trained different models (a model sent to some nodes only)
    with guarded("encrypt", 8 * update.size / 2**20 + _arrays_mb(epoch.params, int(update.size), 2)):
        blob = epoch.upload(number_trained, np.asarray(update), weight,
                            keep_own_c1=False, examples=int(result.num_examples),  # type: ignore[attr-defined]
                            context=model_digest(global_state))
    t3 = time.perf_counter()
    _save(context, epoch, number)
    diagnostics = {**result.metrics, "train_s": t2 - t1, "he_key_check_s": t1 - t0,  # type: ignore[attr-defined]
                   "he_encrypt_s": t3 - t2}
    metrics = {Key.NUM_EXAMPLES: result.num_examples, Key.WEIGHT: weight,  # type: ignore[attr-defined]
               Key.TRAIN_LOSS: result.train_loss}  # type: ignore[attr-defined]
    return _reply(msg, {Key.UPLOAD: blob}, metrics, diagnostics)


def handle_reveal(msg: Message, context: Context, cfg: RunConfig) -> Message:
    """Malicious-colluding: reveal the ciphertexts once the round's commitment list is fixed."""
    start = time.perf_counter()
    with guarded("reveal"):
        epoch, number = _load(context, cfg, msg)
        blob = epoch.on_commitment_list(_blob(msg, Key.COMMITMENTS))
    _save(context, epoch, number)
    if epoch.threshold is not None:  # t-of-n: any t signers decrypt U, this node's signature is not needed
        _release_pending(context)
    return _reply(msg, {Key.UPLOAD: blob}, diagnostics={"he_reveal_s": time.perf_counter() - start})


def handle_consistency(msg: Message, context: Context, cfg: RunConfig) -> Message:
    """Check the round's upload set and commitments, sign its transcript (with a sketch of this client's c1)."""
    start = time.perf_counter()
    with guarded("consistency"):
        epoch, number = _load(context, cfg, msg)
        _finish_key_setup(epoch, msg)
        blob = epoch.on_round_proposal(_blob(msg, Key.PROPOSAL))
    _save(context, epoch, number)
    if epoch.threshold is not None:  # t-of-n: any t signers can decrypt what this node signs
        _release_pending(context)
    return _reply(msg, {Key.SIGNATURE: blob}, diagnostics={"he_sign_s": time.perf_counter() - start})


def handle_decrypt(msg: Message, context: Context, cfg: RunConfig) -> Message:
    """One smudged decryption share, only for the aggregate every member signed (honest-but-curious: for the
    proposal's C1); the share is recorded before it leaves, so the same round or aggregate never gets a second."""
    start = time.perf_counter()  # the stage's whole cost on the client: loading, parsing, checking, sharing
    with guarded("decrypt_share"):  # the node's state and the message parsed inside: the whole stage
        epoch, number = _load(context, cfg, msg)
        _finish_key_setup(epoch, msg)
        if cfg.secure.threat_model is ThreatModel.HONEST_BUT_CURIOUS:
            blob = epoch.on_round_proposal(_blob(msg, Key.PROPOSAL))
        else:
            blob = epoch.on_round_confirmation(_blob(msg, Key.CONFIRMATION))
    _save(context, epoch, number)
    _release_pending(context)
    return _reply(msg, {Key.SHARE: blob}, diagnostics={"he_share_s": time.perf_counter() - start})
