"""Every message of a secure round, server to node and back, is inspected: no key-share secret ever leaves a node."""

from __future__ import annotations

import pytest
import torch
from flwr.app import Array, Message

from bastionfl.client.app import app as client_app
from bastionfl.protocol import BLOB_STYPE
from bastionfl.protocol import NodeState, array_blob
from bastionfl.config import RunConfig
from bastionfl.crypto import ClientEpoch, get_profile
from bastionfl.crypto.scheme import secret_data
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


def _secrets_of(epoch: ClientEpoch) -> list[bytes]:
    """The raw coefficients of a node's key-share secret and its epoch signing key (private attributes, test only)."""
    raw = secret_data(epoch.params, epoch.key._KeyShare__secret).tobytes()  # type: ignore[attr-defined]
    out = [raw]
    if epoch.identity is not None:
        out.append(epoch.identity.private_bytes())
    return out


@pytest.mark.parametrize(("profile", "threat"), [("precise", "malicious"), ("lean", "malicious-colluding"),
                                               ("lean", "honest-but-curious")])
def test_no_secret_in_any_message_of_two_secure_rounds(profile: str, threat: str, tmp_path) -> None:  # noqa: ANN001
    cfg = RunConfig.build(num_clients=3, rounds=2, secure_aggregation="xmkckks", he_profile=profile,
                          key_epoch_rounds=1, threat_model=threat)
    folder = None if threat == "honest-but-curious" else tmp_path / "node-state"  # required under malicious ones
    contexts = {100 + i: node_context(i, 3, node_id=100 + i, state_dir=folder) for i in range(3)}
    for c in contexts.values():  # the nodes' operator accepts this threat model (honest-but-curious needs the pin)
        c.node_config["threat-model"] = threat
    grid = RecordingGrid(client_app, contexts)
    ctx = ServerContext(grid=grid, cfg=cfg, task=build_task(cfg))
    workflow = build_workflow(cfg)
    torch.manual_seed(0)
    state = ctx.new_model().state_dict()
    secrets: list[bytes] = []  # raw secret keys and epoch signing keys: no window of them may appear anywhere
    exports: list[bytes] = []  # the nodes' local epoch state (secret + public parts): never sent whole
    for server_round in (1, 2):  # key_epoch_rounds = 1: a fresh key epoch each round
        rs = RoundState(server_round, state)
        workflow.run_round(ctx, rs)
        state = rs.new_state
        for node_ctx in contexts.values():
            local = array_blob(node_ctx.state.array_records[NodeState.XMK]["epoch"])
            exports.append(local)
            secrets += _secrets_of(ClientEpoch.import_local(get_profile(profile), local))
    per_epoch = 1 if threat == "honest-but-curious" else 2
    assert len({s[-32:] for s in secrets}) == 6 * per_epoch  # 3 nodes x 2 epochs, all distinct
    messages = grid.sent + grid.received
    exchanges = {"honest-but-curious": 3, "malicious": 5, "malicious-colluding": 6}[threat]
    assert len(messages) == 2 * exchanges * 3 * 2  # 2 rounds x exchanges x 3 nodes, both directions
    for msg in messages:
        for payload in _payloads(msg):
            assert not any(export in payload for export in exports)
            for secret in secrets:
                # any 32-byte window of a secret would betray it; check a few spread over its length
                for start in range(0, max(1, len(secret) - 32), max(1, len(secret) // 8)):
                    assert secret[start:start + 32] not in payload, f"secret bytes in a {msg.metadata.message_type}"
        if msg.metadata.message_type != "train.xmk" or msg in grid.sent:
            for record in msg.content.array_records.values():
                for name, array in record.items():
                    assert array.stype == BLOB_STYPE or msg.metadata.message_type == "train.xmk", name
    # the server's view of an update is ciphertext only: no plaintext weights travel up
    ups = [m for m in grid.received if "xmk" in m.content.array_records]
    assert ups and all("arrays" not in m.content.array_records for m in ups)
