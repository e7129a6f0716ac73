"""A malicious server against the real ClientApp, through Flower messages: it forges the aggregate it asks to
decrypt, replays a decryption request, shows different nodes different rounds (equivocation), and presents a roster
of its own. Each time every node refuses, with a one-line error reply and no share."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Message

from bastionfl.client.app import app as client_app
from bastionfl.config import RunConfig
from bastionfl.crypto import RoundConfirmation, RoundProposal, TranscriptSignature, get_profile
from bastionfl.crypto.client_round import aggregate_digest_of
from bastionfl.protocol import Key, MessageType, Record, array_blob
from bastionfl.server.federation import build_workflow
from bastionfl.server.secure import SecureState
from bastionfl.server.secure_epoch import KeySetupStage
from bastionfl.server.secure_round import ConsistencyStage, UploadStage, _content
from bastionfl.server.workflow import RoundState, ServerContext
from bastionfl.tasks.registry import build_task
from tests.flower_helpers import LoopGrid, node_context

PROFILE = "lean"


@pytest.fixture
def federation(tmp_path):  # noqa: ANN001, ANN201
    """Four real ClientApps behind an in-process grid, one honest round done (the key epoch is set up)."""
    cfg = RunConfig.build(num_clients=4, rounds=5, secure_aggregation="xmkckks", he_profile=PROFILE,
                          threat_model="malicious")
    contexts = {100 + i: node_context(i, 4, node_id=100 + i, state_dir=tmp_path / "node-state") for i in range(4)}
    grid = LoopGrid(client_app, contexts)
    ctx = ServerContext(grid=grid, cfg=cfg, task=build_task(cfg))
    torch.manual_seed(0)
    rs = RoundState(1, ctx.new_model().state_dict())
    rs.node_ids = sorted(contexts)
    build_workflow(cfg).run_round(ctx, rs)  # sample, key_setup, train, consistency, decrypt, fuse, evaluate
    return ctx, grid, rs.new_state


def _start_round(ctx: ServerContext, state: dict, number: int, *, sign: bool = True) -> RoundState:
    """The honest beginning of a round: uploads in, and (``sign``) every node's signature on the honest transcript."""
    rs = RoundState(number, state)
    rs.node_ids = sorted(ctx.grid.get_node_ids())
    for stage in (KeySetupStage(), UploadStage(), *([ConsistencyStage()] if sign else [])):
        stage.run(ctx, rs)
    return rs


def _send(ctx: ServerContext, grid: LoopGrid, rs: RoundState, node: int, mtype: str, blobs: dict) -> Message:
    epoch = ctx.states.get(SecureState).require_epoch()
    msg = Message(content=_content(ctx, rs, epoch, blobs), dst_node_id=node, message_type=mtype)
    return grid.deliver(msg)


def _refused(reply: Message, fragment: str) -> bool:
    return reply.has_error() and fragment in reply.error.reason and "\n" not in reply.error.reason


def test_a_forged_aggregate_gets_no_share_and_the_real_one_gets_exactly_one(federation) -> None:  # noqa: ANN001
    ctx, grid, state = federation
    rs = _start_round(ctx, state, 2)
    current = ctx.states.get(SecureState).require_round()
    honest = RoundConfirmation.from_bytes(get_profile(PROFILE), current.confirmation())
    assert honest.c1 is not None
    constant = np.zeros_like(honest.c1)
    constant[..., 0] = 1 << 40  # the key-recovery attack: C1 = X, a large constant
    forged = RoundConfirmation(honest.round_number, honest.length, honest.signatures, constant)
    for node in sorted(grid.contexts):
        reply = _send(ctx, grid, rs, node, MessageType.XMK_DECRYPT,
                      {Key.CONFIRMATION: forged.to_bytes(get_profile(PROFILE))})
        assert _refused(reply, "C1"), reply.error.reason if reply.has_error() else "a share was returned"
    shares = {}
    for node in sorted(grid.contexts):  # the honest confirmation still works: the forgery recorded nothing
        reply = _send(ctx, grid, rs, node, MessageType.XMK_DECRYPT, {Key.CONFIRMATION: current.confirmation()})
        assert not reply.has_error(), reply.error.reason
        shares[node] = array_blob(reply.content[Record.XMK][Key.SHARE])
    for node in sorted(grid.contexts):  # a replayed request gets no second share, from a state reloaded per message
        reply = _send(ctx, grid, rs, node, MessageType.XMK_DECRYPT, {Key.CONFIRMATION: current.confirmation()})
        assert reply.has_error() and "share" in reply.error.reason.lower()
    for blob in shares.values():
        current.add_share(blob)
    assert np.all(np.isfinite(current.weighted_mean()))


def test_different_rounds_shown_to_different_nodes_get_no_share(federation) -> None:  # noqa: ANN001
    """Equivocation: half the nodes see the full upload set, half a set without the last member (whose update the
    server would then isolate by subtraction). Each node signs what it saw; no node gives a share on the mix, and
    none signs a second transcript for the round."""
    ctx, grid, state = federation
    rs = _start_round(ctx, state, 2, sign=False)
    current = ctx.states.get(SecureState).require_round()
    params = get_profile(PROFILE)
    full = RoundProposal.from_bytes(params, current.proposal())
    short = RoundProposal(full.round_number, full.length, full.uploads[:3], full.commitments[:3],
                          full.aggregate_digest)
    nodes = sorted(grid.contexts)
    views = {n: (full if i < 2 else short) for i, n in enumerate(nodes)}
    members = ctx.states.get(SecureState).require_epoch().members

    def addressed(view: RoundProposal, node: int) -> bytes:  # each node gets its own c1 back (it keeps none)
        return RoundProposal(view.round_number, view.length, view.uploads, view.commitments, view.aggregate_digest,
                             None, current._c1[members[node]]).to_bytes(params)

    sigs = []
    for node, view in views.items():
        reply = _send(ctx, grid, rs, node, MessageType.XMK_CONSISTENCY, {Key.PROPOSAL: addressed(view, node)})
        assert not reply.has_error(), reply.error.reason  # a consistent-looking view is signed ...
        sigs.append(TranscriptSignature.from_bytes(params, array_blob(reply.content[Record.XMK][Key.SIGNATURE])))
        other = short if view is full else full
        again = _send(ctx, grid, rs, node, MessageType.XMK_CONSISTENCY, {Key.PROPOSAL: addressed(other, node)})
        assert _refused(again, "another transcript")  # ... but only one per round
    sigs.sort(key=lambda s: s.member)
    honest_c1 = np.ascontiguousarray(current._sum[:, 1])  # the real aggregate's C1 (server-side, public)
    mixed = RoundConfirmation(full.round_number, full.length, tuple(sigs), honest_c1)
    for node in nodes:
        reply = _send(ctx, grid, rs, node, MessageType.XMK_DECRYPT, {Key.CONFIRMATION: mixed.to_bytes(params)})
        assert _refused(reply, "transcript")
    assert aggregate_digest_of(honest_c1) == full.aggregate_digest
