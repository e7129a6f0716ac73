"""A malicious server against the real ClientApp, through Flower messages (a second, independent attack pass).

1. Weight skew: the FedAvg weight ``n_k / norm`` is computed from a norm the server sends with each train message.
   Sent a different norm per node (the victim its own example count, everyone else a huge one), the decrypted
   "sum" is the victim's update plus a negligible rest. The nodes must refuse an upload set whose committed weights
   are not one common multiple of the example counts each node declares.
2. Model inconsistency: the victim gets the global model, the others another one; each node commits the digest
   of the model it trained, and nobody signs a set that mixes two.
3. State reset: the server cannot write a node's ``context.state``, but it can send a second key-setup opening
   for the epoch the node holds, which replaces the node's epoch (and its share record). The old round's messages
   then get no share: the key that answered them is gone with the record.
4. Retry replay: the server decrypts a round with every node, claims one failed and "retries" the same round (same
   model, same round number) under a fresh key epoch without it. Local training is seeded by (seed, round,
   partition), so the survivors re-upload the same updates and the difference of the two sums is the dropped node's
   update. Stopped: a node never uploads an update again once it released a share for it (any key epoch).
6. Retry replay after a node restart: the spent digests must outlive the process (the node's state folder).
5. Downgrade: the threat model travels in the server's messages; a node takes an honest-but-curious epoch only when
   its operator pinned it so (``--node-config threat-model=...``; the simulation pins its nodes to the run's).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, Message

from bastionfl.client.app import app as client_app
from bastionfl.client.training import local_train
from bastionfl.config import RunConfig
from bastionfl.protocol import Key, MessageType, Record, array_blob
from bastionfl.server.federation import build_workflow
from bastionfl.server.secure import SecureState
from bastionfl.server.secure_epoch import KeySetupStage
from bastionfl.server.secure_round import ConsistencyStage, DecryptStage, UploadStage, _content
from bastionfl.server.workflow import RoundFailed, RoundState, ServerContext
from bastionfl.tasks.registry import build_task
from bastionfl.tasks.vectorize import state_delta
from tests.flower_helpers import LoopGrid, node_context

NODES = 4


@pytest.fixture(scope="module")
def federation(tmp_path_factory):  # noqa: ANN001, ANN201
    """Four real ClientApps behind an in-process grid, one honest round done."""
    cfg = RunConfig.build(num_clients=NODES, rounds=5, secure_aggregation="xmkckks", he_profile="lean",
                          threat_model="malicious")
    folder = tmp_path_factory.mktemp("node-state")
    contexts = {100 + i: node_context(i, NODES, node_id=100 + i, state_dir=folder) for i in range(NODES)}
    grid = LoopGrid(client_app, contexts)
    ctx = ServerContext(grid=grid, cfg=cfg, task=build_task(cfg))
    torch.manual_seed(0)
    rs = RoundState(1, ctx.new_model().state_dict())
    rs.node_ids = sorted(contexts)
    build_workflow(cfg).run_round(ctx, rs)
    return ctx, grid, rs.new_state


def _update_of(cfg: RunConfig, state: dict, partition: int, number: int) -> tuple[np.ndarray, int]:
    """What a node's seeded local training gives (the ground truth the attacker wants)."""
    res = local_train(cfg, state, partition, NODES, number)
    return np.asarray(state_delta(res.state_dict, state)), res.num_examples


def _skewed_round(ctx: ServerContext, grid: LoopGrid, state: dict, number: int, victim: int,
                  norm_for: Callable[[int, int], float], model_for: Callable[[int], dict]) -> RoundFailed | np.ndarray:
    """A round whose train messages carry a per-node weight norm and model; the refusal, or the decrypted sum."""
    rs = RoundState(number, state)
    rs.node_ids = sorted(grid.contexts)
    KeySetupStage().run(ctx, rs)
    secure = ctx.states.get(SecureState)
    epoch = secure.require_epoch()
    current = secure.current = epoch.engine.new_round(number)
    secure.uploaders = []
    for node in epoch.nodes:
        content = _content(ctx, rs, epoch, epoch.key_blobs(node))
        content[Record.XMK_CONFIG][Key.WEIGHT_NORM] = float(norm_for(node, _update_of(ctx.cfg, state, node - 100,
                                                                                        number)[1]))
        content[Record.ARRAYS] = ArrayRecord(model_for(node))
        reply = grid.deliver(Message(content=content, dst_node_id=node, message_type=MessageType.XMK_TRAIN))
        assert not reply.has_error(), reply.error.reason
        current.add_upload(array_blob(reply.content[Record.XMK][Key.UPLOAD]))
        secure.uploaders.append(node)
        epoch.keyed.add(node)
    try:
        ConsistencyStage().run(ctx, rs)
        DecryptStage().run(ctx, rs)
    except RoundFailed as exc:
        secure.invalidate_epoch()
        return exc
    return current.result()


def test_per_node_weight_norm_cannot_isolate_an_update(federation) -> None:  # noqa: ANN001
    """The victim's weight 1, everyone else's 1e-6: every node refuses to sign."""
    ctx, grid, state = federation
    victim = 103
    out = _skewed_round(ctx, grid, state, 2, victim, lambda node, n: n * (1 if node == victim else 10**6),
                        lambda node: state)
    if not isinstance(out, RoundFailed):
        err = float(np.abs(out - _update_of(ctx.cfg, state, victim - 100, 2)[0]).max())
        raise AssertionError(f"the victim's update was isolated by skewed weights (max error {err:.1e})")
    assert "did not sign" in str(out)


def test_a_model_sent_to_some_nodes_only_is_refused(federation) -> None:  # noqa: ANN001
    """Model inconsistency: the victim gets the global model, the others another one (here with every weight
    zero, whose updates differ); each node committed the digest of the model it trained: nobody signs."""
    ctx, grid, state = federation
    victim = 103
    other = {k: torch.zeros_like(v) for k, v in state.items()}
    out = _skewed_round(ctx, grid, state, 5, victim, lambda node, n: 1000.0,
                        lambda node: state if node == victim else other)
    assert isinstance(out, RoundFailed) and "did not sign" in str(out)


def test_reopening_the_epoch_resets_no_share_cap(federation) -> None:  # noqa: ANN001
    ctx, grid, state = federation
    number = 4
    ctx.states.get(SecureState).invalidate_epoch()
    rs = RoundState(number, state)
    rs.node_ids = sorted(grid.contexts)
    for stage in (KeySetupStage(), UploadStage(), ConsistencyStage(), DecryptStage()):
        stage.run(ctx, rs)
    secure = ctx.states.get(SecureState)
    epoch, current = secure.require_epoch(), secure.require_round()
    node = epoch.nodes[0]
    confirmation = current.confirmation()
    proposal = current.proposal(for_member=epoch.members[node])

    def send(mtype: str, blobs: dict, meta: dict | None = None) -> Message:
        content = _content(ctx, rs, epoch, blobs)
        for k, v in (meta or {}).items():
            content[Record.XMK_CONFIG][k] = v
        return grid.deliver(Message(content=content, dst_node_id=node, message_type=mtype))

    assert send(MessageType.XMK_DECRYPT, {Key.CONFIRMATION: confirmation}).has_error()  # one share per round
    reopened = send(MessageType.XMK_KEYGEN, {Key.OPENING: epoch.engine.opening.to_bytes(epoch.engine.params)},
                    {Key.THREAT_MODEL: str(ctx.cfg.secure.threat_model)})
    assert not reopened.has_error(), reopened.error.reason  # the node took a fresh key for the same epoch number
    stale = {Key.CONFIRMATION: confirmation, Key.KEY_MESSAGE: epoch.key_message}
    for mtype, blobs in ((MessageType.XMK_DECRYPT, {Key.CONFIRMATION: confirmation}),
                         (MessageType.XMK_CONSISTENCY, {Key.PROPOSAL: proposal}), (MessageType.XMK_DECRYPT, stale)):
        reply = send(mtype, blobs)
        assert reply.has_error() and "\n" not in reply.error.reason, mtype
    secure.invalidate_epoch()


def test_decrypted_round_replayed_as_a_retry_without_one_node_isolates_nothing(federation) -> None:  # noqa: ANN001
    _replay_without_the_last_node(*federation, number=3)


def test_a_restarted_node_still_refuses_a_decrypted_update(tmp_path) -> None:  # noqa: ANN001
    """6. Retry replay after a restart: the spent digests lived only in the node's in-memory state, so a node whose
    process restarted (empty context) trained the same seeded update again and uploaded it. With a state folder
    (node config ``state-dir``) they are written to disk, fsynced, before the upload or share leaves."""
    cfg = RunConfig.build(num_clients=NODES, rounds=5, secure_aggregation="xmkckks", he_profile="lean",
                          threat_model="malicious")

    def fresh() -> dict:
        contexts = {100 + i: node_context(i, NODES, node_id=100 + i) for i in range(NODES)}
        for c in contexts.values():
            c.node_config["state-dir"] = str(tmp_path)
        return contexts

    grid = LoopGrid(client_app, fresh())
    ctx = ServerContext(grid=grid, cfg=cfg, task=build_task(cfg))
    torch.manual_seed(0)
    state = ctx.new_model().state_dict()
    _replay_without_the_last_node(ctx, grid, state, number=2, restart=lambda: grid.contexts.update(fresh()))


def test_a_retry_on_a_nudged_model_isolates_nothing(federation) -> None:  # noqa: ANN001
    """8. Retry replay on a nudged model: the spent digests are exact, so the server "retries" the decrypted round
    with the global model moved by 1e-7 in one weight. Training is seeded by (seed, round, partition): the survivors'
    new updates differ from their first ones by about that much, are not refused, and the difference of the two sums
    is the dropped node's update. A node now never uploads a second update for a training round it released."""
    ctx, grid, state = federation
    name = next(k for k, v in state.items() if v.is_floating_point())
    nudged = dict(state)
    nudged[name] = state[name].clone()
    nudged[name].view(-1)[0] += 1e-7
    _replay_without_the_last_node(ctx, grid, state, number=6, retry_state=nudged)


def _replay_without_the_last_node(ctx, grid, state, number: int, restart=None,  # noqa: ANN001
                                  retry_state=None) -> None:  # noqa: ANN001
    """Decrypt round ``number`` with every node, then (after ``restart``, on ``retry_state``) "retry" it without the
    last one."""
    nodes = sorted(grid.contexts)
    ctx.states.get(SecureState).invalidate_epoch()

    def attempt(members: list[int], model=state):  # noqa: ANN001, ANN202 - a new epoch, uploads, every share
        rs = RoundState(number, model)
        rs.node_ids = list(members)
        for stage in (KeySetupStage(), UploadStage(), ConsistencyStage(), DecryptStage()):
            stage.run(ctx, rs)
        secure = ctx.states.get(SecureState)
        return secure.require_round(), secure.require_epoch()

    first, epoch1 = attempt(nodes)  # every share comes in: the server decrypts the sum of four
    total4 = first.result()
    ctx.states.get(SecureState).invalidate_epoch()  # ... and claims the last node failed: a "retry" without it
    if restart is not None:
        restart()  # every node's process restarts: its in-memory state is gone
    try:
        second, epoch2 = attempt(nodes[:3], state if retry_state is None else retry_state)
    except RoundFailed:
        return  # the survivors refused to offer their spent updates again
    isolated = total4 - second.result() * (epoch2.weight_norm / epoch1.weight_norm)  # weights are n_k / norm
    delta, n = _update_of(ctx.cfg, state, 3, number)
    truth = delta * n / epoch1.weight_norm
    err = float(np.abs(isolated - truth).max())
    assert err > 0.1 * float(np.abs(truth).max()), f"the dropped node's update was isolated (max error {err:.1e})"


def _downgraded_opening(node_config: dict) -> Message:
    """A key-setup opening of an honest-but-curious epoch, sent by a server whose configuration says so."""
    from flwr.app import ConfigRecord, RecordDict

    from bastionfl.crypto import ServerEpoch, get_profile
    from bastionfl.protocol import blob_array, config_record
    from tests.flower_helpers import call

    cfg = RunConfig.build(num_clients=NODES, secure_aggregation="xmkckks", he_profile="lean",
                          threat_model="honest-but-curious", min_members=2, min_uploads=2)
    _, opening = ServerEpoch.open(get_profile("lean"), "honest-but-curious", "bastionfl/run/1", 99)
    content = RecordDict({Record.XMK: ArrayRecord({Key.OPENING: blob_array(opening)}),
                          Record.XMK_CONFIG: ConfigRecord({Key.EPOCH: 99, Key.THREAT_MODEL: "honest-but-curious"}),
                          Record.CONFIG: config_record(cfg, 1)})
    ctx = node_context(0, NODES, node_id=300)
    ctx.node_config.update(node_config)
    return call(client_app, content, MessageType.XMK_KEYGEN, ctx)


def test_a_node_pinned_to_malicious_refuses_a_downgraded_epoch() -> None:
    """The node's policy travels in the server's messages; a node operator pins it with --node-config: the server
    cannot downgrade it to honest-but-curious (where a constant C1 returns the key) nor lower its minimums."""
    reply = _downgraded_opening({"threat-model": "malicious"})
    assert reply.has_error() and "pinned" in reply.error.reason


def test_an_unpinned_node_refuses_a_downgraded_epoch() -> None:
    """Without a pin a node still never takes an honest-but-curious epoch; its operator must allow it explicitly."""
    reply = _downgraded_opening({})
    assert reply.has_error() and "honest-but-curious" in reply.error.reason
    allowed = _downgraded_opening({"threat-model": "honest-but-curious"})
    assert not allowed.has_error(), allowed.error.reason if allowed.has_error() else ""


def test_node_pins_are_floors_and_ceilings_of_the_servers_policy() -> None:
    from bastionfl.client.secure import client_policy
    from bastionfl.protocol import ProtocolError

    cfg = RunConfig.build(secure_aggregation="xmkckks", threat_model="malicious", min_members=2, min_uploads=2,
                          key_epoch_rounds=50)
    pins = {"threat-model": "malicious", "min-members": "5", "min-uploads": "4", "max-shares": "3",
            "require-roster": "true"}
    policy = client_policy(cfg, pins)
    assert (policy.min_members, policy.min_uploads, policy.max_shares, policy.require_certified_roster) == (5, 4, 3,
                                                                                                          True)
    assert client_policy(cfg, {}).min_members == 2  # unpinned: the server's values
    strict = RunConfig.build(num_clients=10, secure_aggregation="xmkckks", threat_model="malicious", min_members=9,
                             min_uploads=9)
    assert client_policy(strict, pins).min_members == 9  # the server may only be stricter
    for bad in ({"threat-model": "malicious-colluding"}, {"min-members": "three"}, {"max-shares": "x"}):
        with pytest.raises(ProtocolError):
            client_policy(cfg, bad)


def _threshold_opening(node_config: dict, threshold: float = 0.6) -> Message | str:
    """A key-setup opening of a t-of-n epoch (the server's configuration asks for it)."""
    from flwr.app import ConfigRecord, RecordDict

    from bastionfl.crypto import ServerEpoch, get_profile
    from bastionfl.crypto.threshold import ThresholdRule
    from bastionfl.client.secure import handle_keygen
    from bastionfl.protocol import ProtocolError, blob_array, config_record

    cfg = RunConfig.build(num_clients=NODES, secure_aggregation="xmkckks", he_profile="lean", threshold=threshold,
                          auth="pseudonym", threat_model="malicious-colluding")
    _, opening = ServerEpoch.open(get_profile("lean"), "malicious-colluding", "bastionfl/run/1", 98,
                                  ThresholdRule.parse(threshold))
    content = RecordDict({Record.XMK: ArrayRecord({Key.OPENING: blob_array(opening)}),
                          Record.XMK_CONFIG: ConfigRecord({Key.EPOCH: 98, Key.THREAT_MODEL: "malicious-colluding"}),
                          Record.CONFIG: config_record(cfg, 1)})
    ctx = node_context(0, NODES, node_id=301)
    ctx.node_config.update(node_config)
    msg = Message(content, dst_node_id=ctx.node_id, message_type=MessageType.XMK_KEYGEN)
    try:  # the node's key-setup handler itself (behind the admission gate, which this server passed)
        return handle_keygen(msg, ctx, cfg, 10)
    except ProtocolError as exc:
        return str(exc)


def test_the_server_cannot_lower_the_decrypting_threshold() -> None:
    """7. Threshold downgrade: t travels in the server's configuration and its epoch opening, and a client compared
    the opening's rule with that same configuration. A server that turns an N-of-N node into a t-of-n one with
    t = n/2 + 1 leaves c_max = 0: one colluder then signs two transcripts of one round and the difference of the two
    decrypted sums is an update. An unpinned node now refuses t-of-n; a pinned one takes only its own threshold."""
    from bastionfl.client.secure import client_policy
    from bastionfl.protocol import ProtocolError

    for pins, says in (({"threat-model": "malicious-colluding"}, "pins it"),
                       ({"threat-model": "malicious-colluding", "threshold": "0.8"}, "pinned to 0.8")):
        refusal = _threshold_opening(pins)
        assert isinstance(refusal, str) and says in refusal, refusal
    cfg = RunConfig.build(num_clients=NODES, secure_aggregation="xmkckks", threshold=0.6, auth="pseudonym",
                          threat_model="malicious-colluding")
    assert client_policy(cfg, {"threshold": "0.6"}).threshold is not None  # the operator allowed exactly this
    with pytest.raises(ProtocolError):
        client_policy(cfg, {"threshold": "six"})
