"""Every message of a secure round, server to node and back, is inspected: no key-share secret ever leaves a node."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
from flwr.app import Array, Message

from bastionfl.client.app import app as client_app
from bastionfl.protocol import BLOB_STYPE
from bastionfl.protocol import NodeState
from bastionfl.config import RunConfig
from bastionfl.crypto import KeyShare, get_profile
from bastionfl.server.federation import build_workflow
from bastionfl.tasks.registry import build_task
from bastionfl.server.workflow import RoundState, ServerContext
from tests.flower_helpers import LoopGrid, node_context


class RecordingGrid(LoopGrid):
    """Keeps a copy of every reply as well as every sent message."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.received: list[Message] = []

    def deliver(self, msg: Message) -> Message:
        reply = super().deliver(msg)
        self.received.append(reply)
        return reply


def _payloads(msg: Message) -> list[bytes]:
    out = []
    for record in msg.content.array_records.values():
        for array in record.values():
            assert isinstance(array, Array)
            out.append(bytes(array.data))
    for record in msg.content.config_records.values():
        out += [v for v in record.values() if isinstance(v, bytes)]
    return out


def _secret_blob(key: KeyShare) -> bytes:
    """The SEAL bytes of a key share's secret (reached through its private attribute, for this test only)."""
    fd, path = tempfile.mkstemp()
    os.close(fd)
    try:
        key._KeyShare__secret.save(path)  # type: ignore[attr-defined]
        return open(path, "rb").read()
    finally:
        os.unlink(path)


@pytest.mark.parametrize("profile", ["precise", "lean"])
def test_no_secret_in_any_message_of_two_secure_rounds(profile: str) -> None:
    cfg = RunConfig.build(num_clients=3, rounds=2, secure_aggregation="xmkckks", he_profile=profile, key_epoch_rounds=1)
    contexts = {100 + i: node_context(i, 3, node_id=100 + i) for i in range(3)}
    grid = RecordingGrid(client_app, contexts)
    ctx = ServerContext(grid=grid, cfg=cfg, task=build_task(cfg))
    workflow = build_workflow(cfg)
    torch.manual_seed(0)
    state = ctx.new_model().state_dict()
    secrets: list[bytes] = []  # raw SEAL secret keys: no window of them may appear anywhere
    exports: list[bytes] = []  # the nodes' local key-state blobs (secret + public parts): never sent whole
    for server_round in (1, 2):  # key_epoch_rounds = 1: a fresh key epoch each round
        rs = RoundState(server_round, state)
        workflow.run_round(ctx, rs)
        state = rs.new_state
        for node_ctx in contexts.values():
            local = bytes(node_ctx.state.config_records[NodeState.XMK]["key"])
            exports.append(local)
            secrets.append(_secret_blob(KeyShare.import_local(get_profile(profile), local)))
    assert len({s[-64:] for s in secrets}) == 6  # 3 nodes x 2 epochs, all distinct
    messages = grid.sent + grid.received
    assert len(messages) == 2 * 3 * 3 * 2  # 2 rounds x 3 stages x 3 nodes, both directions
    for msg in messages:
        for payload in _payloads(msg):
            assert not any(export in payload for export in exports)
            for secret in secrets:
                # any 64-byte window of a secret would betray it; check a few spread over its length
                for start in range(0, len(secret) - 64, max(1, len(secret) // 8)):
                    assert secret[start:start + 64] not in payload, f"secret bytes in a {msg.metadata.message_type}"
        if msg.metadata.message_type != "train.xmk" or msg in grid.sent:
            for record in msg.content.array_records.values():
                for name, array in record.items():
                    assert array.stype == BLOB_STYPE or msg.metadata.message_type == "train.xmk", name
    # the server's view of an update is ciphertext only: no plaintext weights travel up
    ups = [m for m in grid.received if "xmk" in m.content.array_records]
    assert ups and all("arrays" not in m.content.array_records for m in ups)
