"""The xMK-CKKS stages on their own, against fake nodes that run the crypto library: key setup, encrypted training
with streaming aggregation, decryption and fusion, and each stage's handling of a dropout or a malformed reply."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, MetricRecord, RecordDict

from bastionfl.config import RunConfig
from bastionfl.crypto import (AggregatedPublicKey, CrsSeed, DecryptionRequest, KeyShare, encrypt_vector,
                              get_profile)
from bastionfl.protocol import Key, MessageType, Record, Stage, array_blob, blob_array
from bastionfl.server.secure import DecryptStage, EncryptedTrainStage, FuseStage, KeySetupStage, SecureState
from bastionfl.server.stages import Participation
from bastionfl.server.workflow import RoundFailed
from bastionfl.tasks.vectorize import state_to_vector
from tests.server.fakes import round_state, stage_context

PROFILE = "lean"


class CryptoNode:
    """A fake client that follows the protocol with the crypto library; ``fail_at`` makes it drop out there."""

    def __init__(self, nid: int, count: int, fail_at: str = "", garbage_at: str = "") -> None:
        self.nid, self.count, self.fail_at, self.garbage_at = nid, count, fail_at, garbage_at
        self.params = get_profile(PROFILE)
        self.key: KeyShare | None = None
        self.own: bytes = b""
        self.delta: np.ndarray | None = None

    def __call__(self, mtype: str, content: RecordDict) -> RecordDict | None:
        if mtype == self.fail_at:
            return None
        if mtype == MessageType.XMK_KEYGEN:
            rec = content.config_records[Record.XMK]
            self.key = KeyShare.generate(self.params, CrsSeed.from_session(str(rec[Key.SESSION]), int(rec[Key.EPOCH])))
            blob = self.key.public_share().to_bytes() if self.garbage_at != mtype else b"garbage"
            return RecordDict({Record.XMK: ArrayRecord({Key.PUBLIC_SHARE: blob_array(blob)}),
                               Record.METRICS: MetricRecord({Key.NUM_EXAMPLES: self.count})})
        assert self.key is not None
        if mtype == MessageType.XMK_TRAIN:
            apk = AggregatedPublicKey.from_bytes(self.params, array_blob(content[Record.XMK][Key.AGGREGATED_KEY]))
            self.key.accept(apk)
            state = content[Record.ARRAYS].to_torch_state_dict()
            rng = np.random.default_rng(self.nid)
            self.delta = rng.normal(0, 0.01, state_to_vector(state).size)
            weight = self.count / float(content.config_records[Record.XMK_CONFIG][Key.WEIGHT_NORM])
            update = encrypt_vector(apk, weight * self.delta)
            self.own = update.c1_digest()
            return RecordDict({Record.XMK: ArrayRecord({Key.UPDATE: blob_array(update.to_bytes())}),
                               Record.METRICS: MetricRecord({Key.NUM_EXAMPLES: self.count, Key.WEIGHT: weight,
                                                             Key.TRAIN_LOSS: 1.0})})
        if mtype == MessageType.XMK_DECRYPT:
            request = DecryptionRequest.from_bytes(self.params, array_blob(content[Record.XMK][Key.REQUEST]))
            blob = self.key.decryption_share(request, self.own).to_bytes() if self.garbage_at != mtype else b"x"
            return RecordDict({Record.XMK: ArrayRecord({Key.SHARE: blob_array(blob)})})
        raise AssertionError(mtype)


def _federation(nodes: list[CryptoNode], **settings: object):  # noqa: ANN202
    cfg = RunConfig.build(num_clients=len(nodes), secure_aggregation="xmkckks", he_profile=PROFILE, **settings)
    by_id = {n.nid: n for n in nodes}
    return stage_context(cfg, sorted(by_id), lambda nid, mtype, content: by_id[nid](mtype, content))


def test_key_setup_leaves_out_a_malformed_share_and_is_redone_only_when_due() -> None:
    nodes = [CryptoNode(1, 10), CryptoNode(2, 20, garbage_at=MessageType.XMK_KEYGEN), CryptoNode(3, 30)]
    ctx, messenger = _federation(nodes, key_epoch_rounds=2)
    rs = round_state(ctx)
    KeySetupStage().run(ctx, rs)
    epoch = ctx.states.get(SecureState).epoch
    assert epoch is not None and epoch.participants == [1, 3] and rs.node_ids == [1, 3]
    assert epoch.weight_norm == 40 and rs.metrics["key_epoch"] == 1 and rs.metrics["dropouts"] == {"keygen": 1}
    sent = len(messenger.sent)
    KeySetupStage().run(ctx, round_state(ctx, 2, [1, 3]))  # same participants, within key_epoch_rounds
    assert len(messenger.sent) == sent
    epoch.rounds_used = 2
    rs3 = round_state(ctx, 3, [1, 3])
    KeySetupStage().run(ctx, rs3)  # the epoch served its rounds: a new one
    assert rs3.metrics["key_epoch"] == 2 and len(messenger.sent) == sent + 2


def test_key_setup_needs_two_participants() -> None:
    ctx, _ = _federation([CryptoNode(1, 10), CryptoNode(2, 10, fail_at=MessageType.XMK_KEYGEN)])
    with pytest.raises(RoundFailed, match="at least 2"):
        KeySetupStage().run(ctx, round_state(ctx))


def test_a_secure_round_equals_the_weighted_mean_of_the_updates() -> None:
    nodes = [CryptoNode(1, 10), CryptoNode(2, 30), CryptoNode(3, 60)]
    ctx, _ = _federation(nodes)
    rs = round_state(ctx)
    for stage in (KeySetupStage(), EncryptedTrainStage(), DecryptStage(), FuseStage()):
        stage.run(ctx, rs)
    assert rs.new_state is not None and rs.metrics["num_examples"] == 100
    expected = sum(n.count * n.delta for n in nodes) / 100.0  # type: ignore[operator]
    got = state_to_vector(rs.new_state) - state_to_vector(rs.global_state)
    float_mask = np.concatenate([np.full(v.numel(), v.is_floating_point()) for v in rs.global_state.values()])
    assert np.max(np.abs(got[float_mask] - expected[float_mask])) < 1e-6
    assert rs.stage_times[Stage.AGGREGATE] > 0 and ctx.states.get(SecureState).current is None


def test_a_dropout_at_upload_fails_the_attempt_excludes_the_node_and_invalidates_the_epoch() -> None:
    nodes = [CryptoNode(1, 10), CryptoNode(2, 10, fail_at=MessageType.XMK_TRAIN), CryptoNode(3, 10)]
    ctx, _ = _federation(nodes)
    rs = round_state(ctx)
    KeySetupStage().run(ctx, rs)
    with pytest.raises(RoundFailed, match="missing at upload"):
        EncryptedTrainStage().run(ctx, rs)
    state, log = ctx.states.get(SecureState), ctx.states.get(Participation)
    assert state.epoch is not None and not state.epoch.valid and state.current is None
    assert log.excluded[1] == {2} and log.dropouts == {"upload": 1}


@pytest.mark.parametrize("how", ["silent", "malformed"])
def test_a_missing_or_malformed_share_fails_the_attempt_before_fusion(how: str) -> None:
    bad = CryptoNode(2, 10, **({"fail_at": MessageType.XMK_DECRYPT} if how == "silent"
                               else {"garbage_at": MessageType.XMK_DECRYPT}))
    ctx, _ = _federation([CryptoNode(1, 10), bad, CryptoNode(3, 10)])
    rs = round_state(ctx)
    for stage in (KeySetupStage(), EncryptedTrainStage()):
        stage.run(ctx, rs)
    with pytest.raises(RoundFailed, match="gave no share"):
        DecryptStage().run(ctx, rs)
    assert ctx.states.get(Participation).excluded[1] == {2} and not ctx.states.get(SecureState).epoch.valid


def test_fusion_refuses_an_incomplete_share_set() -> None:
    ctx, _ = _federation([CryptoNode(1, 10), CryptoNode(2, 10)])
    rs = round_state(ctx)
    for stage in (KeySetupStage(), EncryptedTrainStage(), DecryptStage()):
        stage.run(ctx, rs)
    state = ctx.states.get(SecureState)
    assert state.current is not None
    state.current.shares = state.current.shares[:1]  # a share lost between the stages
    with pytest.raises(RoundFailed, match="fusion refused"):
        FuseStage().run(ctx, rs)
    assert rs.new_state is None and not state.epoch.valid


def test_stages_refuse_to_run_out_of_order() -> None:
    ctx, _ = _federation([CryptoNode(1, 10), CryptoNode(2, 10)])
    with pytest.raises(RoundFailed, match="key_setup"):
        EncryptedTrainStage().run(ctx, round_state(ctx))
    KeySetupStage().run(ctx, round_state(ctx))
    with pytest.raises(RoundFailed, match="train stage"):
        DecryptStage().run(ctx, round_state(ctx))
    assert torch.is_tensor(next(iter(round_state(ctx).global_state.values())))
