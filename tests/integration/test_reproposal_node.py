"""Re-proposals at the node: the real ClientApp handlers against a malicious server that runs two of a node's
messages at once. Flower gives each message its own ClientApp process and hands each the node's context as it was
stored when the process started, then stores whatever the process returns (the last one wins): two messages sent
together both start from the same state, so each of the node's "one share per round" records can be forked."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

from bastionfl.client.secure import _save, _spent, handle_consistency, handle_decrypt
from bastionfl.config import RunConfig
from bastionfl.crypto import RoundConfirmation, get_profile
from bastionfl.crypto.threshold import ThresholdRule
from bastionfl.protocol import Key, MessageType, ProtocolError, Record, blob_array, config_record
from tests.crypto.threshold_engine import threshold_epoch
from tests.flower_helpers import node_context

N = 5  # t = 3, c_max = 0: two upload sets of one round need 2t = 6 share-givers, so one of the five gives twice
EPOCH = 4
NODE = 400


def _cfg() -> RunConfig:
    return RunConfig.build(num_clients=N, secure_aggregation="xmkckks", he_profile="lean", threshold=0.6,
                           auth="pseudonym", threat_model="malicious")


@pytest.fixture(scope="module")
def fed():  # noqa: ANN201
    return threshold_epoch(get_profile("lean"), "malicious", N, ThresholdRule.parse(0.6), run_id="repropose-node")


def _message(cfg: RunConfig, key: str, blob: bytes, kind: str) -> Message:
    content = RecordDict({Record.XMK: ArrayRecord({key: blob_array(blob)}),
                          Record.XMK_CONFIG: ConfigRecord({Key.EPOCH: EPOCH}), Record.CONFIG: config_record(cfg, 1)})
    return Message(content, dst_node_id=NODE, message_type=kind)


def _blob(reply: Message, key: str) -> bytes:
    from bastionfl.protocol import array_blob

    assert not reply.has_error()
    return array_blob(reply.content[Record.XMK][key])


def _task(ctx):  # noqa: ANN001, ANN202
    """What one ClientApp process gets: the node's context as stored now (a copy)."""
    return copy.deepcopy(ctx)


def _node(fed, tmp_path: Path, state_dir: bool):  # noqa: ANN001, ANN202
    ctx = node_context(0, N, node_id=NODE)
    ctx.node_config.update({"threat-model": "malicious", "threshold": "0.6"})
    if state_dir:
        ctx.node_config["state-dir"] = str(tmp_path / "state")
    _save(ctx, fed.clients[0], EPOCH)
    return ctx


def _fork_two_upload_sets(fed, ctx, number: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:  # noqa: ANN001
    """U = {0..3} (member 4 does not upload); node 0 (the real handlers) and members 1-4 sign it. Two tasks start
    from node 0's stored state: one decrypts U with S = {0, 3, 4}, the other signs the re-proposal U' = U - {3}; the
    second is stored last, and node 0 then decrypts U' with S = {0, 1, 2}. Honest members 1-4 each give shares for
    one upload set; node 0 gives them for two. Returns both sums and the updates."""
    cfg = _cfg()
    rng = np.random.default_rng(number)
    xs = [rng.uniform(-1, 1, 40) for _ in range(N)]
    ups = [fed.clients[i].upload(number, xs[i], 1.0) for i in range(N - 1)]
    _save(ctx, fed.clients[0], EPOCH)  # the node's own upload, stored as handle_train stores it
    whole, part = fed.server.new_round(number), fed.server.new_round(number)  # the server's two views of the round
    for srv in (whole, part):
        for u in ups:
            srv.add_upload(u)
    sigs = [_blob(handle_consistency(_message(cfg, Key.PROPOSAL, whole.proposal(0), MessageType.XMK_CONSISTENCY),
                                     ctx, cfg), Key.SIGNATURE)]
    sigs += [fed.clients[i].on_round_proposal(whole.proposal(i)) for i in range(1, N)]
    for srv in (whole, part):
        srv.proposal()
        for s in sigs:
            srv.add_signature(s)
    task_a, task_b = _task(ctx), _task(ctx)  # both messages arrive together: the same stored state
    conf = whole.confirmation(0, (0, 3, 4))
    whole.add_share(_blob(handle_decrypt(_message(cfg, Key.CONFIRMATION, conf, MessageType.XMK_DECRYPT), task_a,
                                         cfg), Key.SHARE))
    for i in (3, 4):
        whole.add_share(fed.clients[i].on_round_confirmation(conf))
    part.repropose([N - 2])
    sig = handle_consistency(_message(cfg, Key.PROPOSAL, part.proposal(0), MessageType.XMK_CONSISTENCY), task_b, cfg)
    part.add_signature(_blob(sig, Key.SIGNATURE))  # task b finishes last: its state is the one stored
    for i in (1, 2):
        part.add_signature(fed.clients[i].on_round_proposal(part.proposal(i)))
    conf = part.confirmation(0, (0, 1, 2))
    part.add_share(_blob(handle_decrypt(_message(cfg, Key.CONFIRMATION, conf, MessageType.XMK_DECRYPT), task_b,
                                        cfg), Key.SHARE))
    for i in (1, 2):
        part.add_share(fed.clients[i].on_round_confirmation(conf))
    return whole.result(), part.result(), xs


def test_two_tasks_from_one_stored_state_cannot_give_shares_for_two_upload_sets(fed, tmp_path: Path) -> None:
    """With a state folder, the second task to finish finds the node's state moved on since its copy was taken and
    refuses: no signature on U' leaves after a share on U, and the dropped member's update stays hidden."""
    ctx = _node(fed, tmp_path, state_dir=True)
    with pytest.raises(ProtocolError, match="state changed"):
        _fork_two_upload_sets(fed, ctx, 11)


def test_without_a_state_folder_the_fork_is_refused_at_the_first_step(fed, tmp_path: Path) -> None:
    """The attack that worked without a state folder (sum(U) - sum(U') was member 3's update): the node now refuses
    every step of a malicious epoch without one, so the fork is refused before anything leaves. (Key setup, its first
    step, refuses too: ``test_a_signed_epoch_needs_a_state_folder_at_key_setup``.)"""
    ctx = _node(fed, tmp_path, state_dir=False)
    with pytest.raises(ProtocolError, match="no state folder.*state-dir=<folder>"):
        _fork_two_upload_sets(fed, ctx, 12)


def test_a_spent_record_written_from_an_older_view_keeps_the_releases(tmp_path: Path) -> None:
    """Two tasks read the spent record; one releases its pending results (its share left), then the other writes its
    own older view (a new pending result): the release must survive, or the node uploads a released result again."""
    from bastionfl.client.state_store import load_spent, save_spent

    root = str(tmp_path / "state")
    old, new = b"o" * 32, b"n" * 32
    save_spent(root, 0, [], [old])
    save_spent(root, 0, [old], [])  # task a releases
    save_spent(root, 0, [], [old, new])  # task b, which read the record before a wrote
    released, pending = load_spent(root, 0)
    assert old in released and new in pending and old not in pending
    ctx = node_context(0, N, node_id=NODE)  # what the next task reads: the release is there
    ctx.node_config["state-dir"] = root
    assert old in _spent(ctx)[0]


@pytest.mark.parametrize("state_dir", [True, False], ids=["state-folder", "without"])
def test_two_tasks_cannot_answer_one_attempt_twice(fed, tmp_path: Path, state_dir: bool) -> None:
    """The same fork without a re-proposal: one attempt confirmed with two decrypting sets, sent together. Two shares
    on one ciphertext under two Lagrange coefficients expose the member's key share (crypto.md §11); with a state
    folder the second task is refused; without one (both shares used to leave) the node refuses every share."""
    cfg = _cfg()
    ctx = _node(fed, tmp_path, state_dir)
    number = 21 + int(state_dir)
    xs = [np.full(40, 0.1 * i) for i in range(N)]
    srv = fed.server.new_round(number)
    for i in range(N):
        srv.add_upload(fed.clients[i].upload(number, xs[i], 1.0))
    _save(ctx, fed.clients[0], EPOCH)
    proposal = _message(cfg, Key.PROPOSAL, srv.proposal(0), MessageType.XMK_CONSISTENCY)
    if state_dir:
        srv.add_signature(_blob(handle_consistency(proposal, ctx, cfg), Key.SIGNATURE))
    else:  # the node refuses to sign; the attacker signs for it with the node's epoch (what the fork would give)
        with pytest.raises(ProtocolError, match="no state folder"):
            handle_consistency(proposal, ctx, cfg)
        srv.add_signature(fed.clients[0].on_round_proposal(srv.proposal(0)))
    for i in range(1, N):
        srv.add_signature(fed.clients[i].on_round_proposal(srv.proposal(i)))
    first = srv.confirmation(0, (0, 1, 2))
    second = RoundConfirmation(number, 40, tuple(srv._signatures[i] for i in srv.signers),  # the attacker's own
                               np.ascontiguousarray(srv._sum[:, 1]), attempt=0, decrypting=(0, 3, 4)).to_bytes(fed.params)
    task_a, task_b = _task(ctx), _task(ctx)
    if state_dir:
        handle_decrypt(_message(cfg, Key.CONFIRMATION, first, MessageType.XMK_DECRYPT), task_a, cfg)
        with pytest.raises(ProtocolError, match="state changed"):
            handle_decrypt(_message(cfg, Key.CONFIRMATION, second, MessageType.XMK_DECRYPT), task_b, cfg)
    else:
        for task, conf in ((task_a, first), (task_b, second)):
            with pytest.raises(ProtocolError, match="no state folder"):
                handle_decrypt(_message(cfg, Key.CONFIRMATION, conf, MessageType.XMK_DECRYPT), task, cfg)


def _opening(threat: str, threshold: float) -> tuple[RunConfig, Message]:
    """A key-setup opening of a signed epoch, as a malicious server's configuration asks for it."""
    from bastionfl.crypto import ServerEpoch

    cfg = RunConfig.build(num_clients=N, secure_aggregation="xmkckks", he_profile="lean", threshold=threshold,
                          threat_model=threat, auth="pseudonym" if threshold != 1.0 else "none")
    rule = ThresholdRule.parse(threshold) if threshold != 1.0 else None
    _, opening = ServerEpoch.open(get_profile("lean"), threat, "bastionfl/run/1", 31, rule)
    content = RecordDict({Record.XMK: ArrayRecord({Key.OPENING: blob_array(opening)}),
                          Record.XMK_CONFIG: ConfigRecord({Key.EPOCH: 31, Key.THREAT_MODEL: threat}),
                          Record.CONFIG: config_record(cfg, 1)})
    return cfg, Message(content, dst_node_id=NODE, message_type=MessageType.XMK_KEYGEN)


@pytest.mark.parametrize("threat", ["malicious", "malicious-colluding"])
@pytest.mark.parametrize("threshold", [1.0, 0.6], ids=["N-of-N", "t-of-n"])
def test_a_signed_epoch_needs_a_state_folder_at_key_setup(tmp_path: Path, threat: str, threshold: float) -> None:
    """A node under a malicious threat model (N-of-N or t-of-n: the fork breaks the "one transcript per round" rule
    of both) refuses key setup without a state folder: an error reply naming the fix and one log line, no epoch
    kept; with a folder it answers and keeps its epoch (N-of-N here; t-of-n also needs the Home Authority's session,
    and runs whole with folders in ``test_threshold_federation``)."""
    import logging

    from bastionfl.client.app import xmk_keygen
    from bastionfl.protocol import NodeState

    cfg, msg = _opening(threat, threshold)
    pins = {"threat-model": threat, "threshold": str(threshold)}
    bare = node_context(0, N, node_id=NODE)
    bare.node_config.update(pins)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("bastionfl.client").addHandler(handler)
    try:
        reply = xmk_keygen(msg, bare)  # the ClientApp's key-setup handler, behind the admission gate
    finally:
        logging.getLogger("bastionfl.client").removeHandler(handler)
    assert reply.has_error() and "--node-config state-dir=<folder>" in reply.error.reason
    assert "\n" not in reply.error.reason and NodeState.XMK not in bare.state.array_records
    assert any("state-dir=<folder>" in r.getMessage() and r.levelno == logging.ERROR for r in records)
    if threshold != 1.0:
        return
    kept = node_context(0, N, node_id=NODE, state_dir=tmp_path / "state")
    kept.node_config.update(pins)
    reply = xmk_keygen(msg, kept)
    assert not reply.has_error(), reply.error.reason
    assert NodeState.XMK in kept.state.array_records and (tmp_path / "state" / "partition-0" / "xmk-state-tag").is_file()


def test_an_honest_but_curious_node_runs_without_a_state_folder() -> None:
    """Honest-but-curious trusts the server (a constant C1 already returns the key there): no folder needed."""
    from bastionfl.client.secure import require_state_folder

    cfg = RunConfig.build(num_clients=N, secure_aggregation="xmkckks", threat_model="honest-but-curious")
    require_state_folder(cfg, node_context(0, N, node_id=NODE))
    with pytest.raises(ProtocolError, match="state-dir"):
        require_state_folder(_cfg(), node_context(0, N, node_id=NODE))


def test_a_federation_of_nodes_without_state_folders_stops_with_their_reason(tmp_path: Path,
                                                                             caplog) -> None:  # noqa: ANN001
    """Real ClientApps without state folders under a malicious server: each refuses key setup, the server logs each
    node's one-line reason and gives the round up after its bounded attempts (no retry loop, no epoch)."""
    import logging

    from bastionfl.client.app import app as client_app
    from bastionfl.protocol import NodeState
    from bastionfl.server.federation import FederationError, run_federation
    from tests.flower_helpers import LoopGrid

    cfg = RunConfig.build(num_clients=3, rounds=1, secure_aggregation="xmkckks", he_profile="lean",
                          threat_model="malicious", out_dir=str(tmp_path))
    contexts = {100 + i: node_context(i, 3, node_id=100 + i) for i in range(3)}
    with caplog.at_level(logging.WARNING), pytest.raises(FederationError, match="round 1 failed"):
        run_federation(LoopGrid(client_app, contexts), cfg, tmp_path)
    reasons = [r.getMessage() for r in caplog.records if r.name == "bastionfl.server" and "replied with an error" in
               r.getMessage()]
    assert reasons and all("--node-config state-dir=<folder>" in m and "\n" not in m for m in reasons)
    assert all(NodeState.XMK not in c.state.array_records for c in contexts.values())
