"""Second review of t-of-n at the node: the real ClientApp's handlers, its state folder and its pins, against a
malicious server that decrypts an upload set U through t signers of its choice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

from bastionfl.client.secure import _check_fresh_update, _save, handle_reveal
from bastionfl.config import RunConfig
from bastionfl.crypto import get_profile
from bastionfl.crypto.threshold import ThresholdRule
from bastionfl.protocol import Key, MessageType, ProtocolError, Record, blob_array, config_record
from tests.crypto.threshold_engine import threshold_epoch
from tests.flower_helpers import node_context

N = 5
EPOCH = 7


def _cfg() -> RunConfig:
    return RunConfig.build(num_clients=N, secure_aggregation="xmkckks", he_profile="lean", threshold=0.6,
                           auth="pseudonym", threat_model="malicious-colluding")


def _node(tmp_path: Path, client, state_dir: str | None = None):  # noqa: ANN001, ANN202
    ctx = node_context(0, N, node_id=300)
    ctx.node_config.update({"threat-model": "malicious-colluding", "threshold": "0.6"})
    if state_dir is not None:
        ctx.node_config["state-dir"] = state_dir
    _save(ctx, client, EPOCH)
    return ctx


def _reveal_message(cfg: RunConfig, commitment_list: bytes) -> Message:
    content = RecordDict({Record.XMK: ArrayRecord({Key.COMMITMENTS: blob_array(commitment_list)}),
                          Record.XMK_CONFIG: ConfigRecord({Key.EPOCH: EPOCH}), Record.CONFIG: config_record(cfg, 1)})
    return Message(content, dst_node_id=300, message_type=MessageType.XMK_REVEAL)


@pytest.fixture(scope="module")
def colluding_epoch():  # noqa: ANN201
    return threshold_epoch(get_profile("lean"), "malicious-colluding", N, ThresholdRule.parse(0.6),
                           run_id="review2-node")


def test_a_revealed_upload_is_spent_without_the_node_signing(colluding_epoch, tmp_path: Path) -> None:
    """malicious-colluding t-of-n: a member of U need not sign the transcript (only S does), so its revealed upload
    can be decrypted by t others without it ever reaching the consistency stage, where t-of-n nodes recorded their
    results as spent. A server that keeps a node out of every S would then "retry" its round in new epochs and
    decrypt the same training result in several upload sets (v + h1, v + h2, h1 + h2: v alone). The reveal must
    spend it."""
    fed, cfg = colluding_epoch, _cfg()
    victim = fed.clients[0]
    ctx = _node(tmp_path, victim, str(tmp_path / "state"))
    update = np.linspace(-1, 1, 10)
    _check_fresh_update(ctx, update, "1:3")  # handle_train: pending
    srv = fed.server.new_round(3)
    srv.add_commitment(victim.upload(3, update, 1.0))
    for i in (1, 2):
        srv.add_commitment(fed.clients[i].upload(3, np.zeros(10), 1.0))
    _save(ctx, victim, EPOCH)
    reply = handle_reveal(_reveal_message(cfg, srv.commitment_list()), ctx, cfg)
    assert not reply.has_error()
    with pytest.raises(ProtocolError, match="already released"):
        _check_fresh_update(ctx, update, "1:3")  # the retry of round 3 in a later epoch
    fresh = node_context(0, N, node_id=300)  # ... also after a restart: it is on disk
    fresh.node_config["state-dir"] = str(tmp_path / "state")
    with pytest.raises(ProtocolError, match="already released"):
        _check_fresh_update(fresh, update * 1.000001, "1:3")


@pytest.mark.parametrize("damage", ["file", "garbage", "readonly"])
def test_a_broken_state_folder_refuses_the_upload(tmp_path: Path, damage: str) -> None:
    """A state folder the node cannot read or write: the spent record cannot be kept, so nothing leaves (an error
    reply), rather than an upload the node would forget after a restart."""
    import os

    root = tmp_path / "state"
    if damage == "file":
        root.write_text("not a folder")
    else:
        (root / "partition-0").mkdir(parents=True)
        if damage == "garbage":
            (root / "partition-0" / "xmk-spent.json").write_text("{not json")
        else:
            os.chmod(root / "partition-0", 0o500)
            if os.access(root / "partition-0", os.W_OK):  # running as root: permissions do not bind
                pytest.skip("permissions are not enforced for this user")
    ctx = node_context(0, N, node_id=300)
    ctx.node_config["state-dir"] = str(root)
    with pytest.raises((OSError, ValueError)):
        _check_fresh_update(ctx, np.ones(4), "1:1")
    os.chmod(root / "partition-0", 0o700) if damage == "readonly" else None


def test_a_rolled_back_state_folder_forgets(tmp_path: Path) -> None:
    """Stated limit: the node cannot tell a state folder restored from an older copy (or emptied) from one it wrote:
    after a restart on the old copy it uploads a released result again. The folder's integrity is the operator's."""
    root = tmp_path / "state"
    ctx = node_context(0, N, node_id=300)
    ctx.node_config["state-dir"] = str(root)
    _check_fresh_update(ctx, np.ones(4), "1:1")
    old = (root / "partition-0" / "xmk-spent.json").read_text()
    from bastionfl.client.secure import _release_pending

    _release_pending(ctx)
    assert json.loads((root / "partition-0" / "xmk-spent.json").read_text())["released"]
    (root / "partition-0" / "xmk-spent.json").write_text(old)  # rolled back
    fresh = node_context(0, N, node_id=300)
    fresh.node_config["state-dir"] = str(root)
    _check_fresh_update(fresh, np.ones(4), "1:1")  # not refused: the limit
