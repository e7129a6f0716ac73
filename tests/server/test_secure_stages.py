"""The xMK-CKKS stages on their own, against fake nodes that run the client side of the crypto engine: key setup,
uploads (and reveals), the signed transcript, decryption and fusion in each threat model, and each stage's handling
of a node that drops out or answers garbage."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, MetricRecord, RecordDict

from bastionfl.config import RunConfig
from bastionfl.crypto import ClientEpoch, EpochPolicy, ThreatModel, get_profile
from bastionfl.protocol import Key, MessageType, Record, Stage, array_blob, blob_array, round_of
from bastionfl.server.secure import SecureState, secure_stages
from bastionfl.server.secure_epoch import KeySetupStage
from bastionfl.server.secure_round import ConsistencyStage, DecryptStage, UploadStage
from bastionfl.server.stages import Participation
from bastionfl.server.workflow import RoundFailed
from bastionfl.tasks.vectorize import state_to_vector
from tests.server.fakes import round_state, stage_context

PROFILE = "lean"
THREATS = ["honest-but-curious", "malicious", "malicious-colluding"]


class EngineNode:
    """A fake client following the protocol with ``crypto.ClientEpoch``; ``silent_at`` / ``garbage_at`` name the
    message type at which it never answers or answers noise."""

    def __init__(self, nid: int, count: int, threat: str, silent_at: str = "", garbage_at: str = "") -> None:
        self.nid, self.count, self.silent_at, self.garbage_at = nid, count, silent_at, garbage_at
        self.params = get_profile(PROFILE)
        self.policy = EpochPolicy(10).client_policy(threat, 3, 3)
        self.epoch: ClientEpoch | None = None
        self.delta: np.ndarray | None = None

    def __call__(self, mtype: str, content: RecordDict) -> RecordDict | None:
        if mtype == self.silent_at:
            return None
        xmk = content[Record.XMK] if Record.XMK in content.array_records else None
        if xmk is not None and Key.KEY_MESSAGE in xmk and self.epoch.stage != "ready":  # as the client does
            data = array_blob(xmk[Key.KEY_MESSAGE])
            if self.epoch.stage == "opened":
                self.epoch.on_key_proposal(data)
            else:
                self.epoch.on_key_confirmation(data)
        out: dict[str, bytes]
        metrics = None
        if mtype == MessageType.XMK_KEYGEN:
            self.epoch, reply = ClientEpoch.open(self.params, array_blob(xmk[Key.OPENING]), self.policy)
            out, metrics = {Key.KEY_REPLY: reply}, {Key.NUM_EXAMPLES: self.count}
        elif mtype == MessageType.XMK_KEY_PROPOSAL:
            out = {Key.KEY_RESPONSE: self.epoch.on_key_proposal(array_blob(xmk[Key.PROPOSAL]))}
        elif mtype == MessageType.XMK_TRAIN:
            state = content[Record.ARRAYS].to_torch_state_dict()
            self.delta = np.random.default_rng(self.nid).normal(0, 0.01, state_to_vector(state).size)
            weight = self.count / float(content.config_records[Record.XMK_CONFIG][Key.WEIGHT_NORM])
            number = round_of(content.config_records[Record.CONFIG])
            out = {Key.UPLOAD: self.epoch.upload(number, weight * self.delta, weight)}
            metrics = {Key.NUM_EXAMPLES: self.count, Key.WEIGHT: weight, Key.TRAIN_LOSS: 1.0}
        elif mtype == MessageType.XMK_REVEAL:
            out = {Key.UPLOAD: self.epoch.on_commitment_list(array_blob(xmk[Key.COMMITMENTS]))}
        elif mtype == MessageType.XMK_CONSISTENCY:
            out = {Key.SIGNATURE: self.epoch.on_round_proposal(array_blob(xmk[Key.PROPOSAL]))}
        elif mtype == MessageType.XMK_DECRYPT:
            data = array_blob(xmk[Key.PROPOSAL] if Key.PROPOSAL in xmk else xmk[Key.CONFIRMATION])
            share = (self.epoch.on_round_proposal(data) if self.epoch.threat is ThreatModel.HONEST_BUT_CURIOUS
                     else self.epoch.on_round_confirmation(data))
            out = {Key.SHARE: share}
        else:
            raise AssertionError(mtype)
        if mtype == self.garbage_at:
            out = {k: b"\x00garbage" for k in out}
        content_out = RecordDict({Record.XMK: ArrayRecord({k: blob_array(v) for k, v in out.items()})})
        if metrics is not None:
            content_out[Record.METRICS] = MetricRecord(metrics)
        return content_out


def _federation(threat: str, nodes: list[EngineNode], **settings: object):  # noqa: ANN202
    cfg = RunConfig.build(num_clients=len(nodes), secure_aggregation="xmkckks", he_profile=PROFILE,
                          threat_model=threat, **settings)
    by_id = {n.nid: n for n in nodes}
    return stage_context(cfg, sorted(by_id), lambda nid, mtype, content: by_id[nid](mtype, content))


def _run(ctx, rs, stages) -> None:  # noqa: ANN001
    for stage in stages:
        stage.run(ctx, rs)


def _mean_error(rs, nodes: list[EngineNode]) -> float:  # noqa: ANN001
    total = sum(n.count for n in nodes)
    expected = sum(n.count * n.delta for n in nodes) / total  # type: ignore[operator]
    got = state_to_vector(rs.new_state) - state_to_vector(rs.global_state)
    floats = np.concatenate([np.full(v.numel(), v.is_floating_point()) for v in rs.global_state.values()])
    return float(np.max(np.abs(got[floats] - expected[floats])))


@pytest.mark.parametrize("threat", THREATS)
def test_a_secure_round_equals_the_weighted_mean_of_the_updates(threat: str) -> None:
    nodes = [EngineNode(1, 10, threat), EngineNode(2, 30, threat), EngineNode(3, 60, threat)]
    ctx, messenger = _federation(threat, nodes)
    rs = round_state(ctx)
    _run(ctx, rs, secure_stages(ctx.cfg))
    assert rs.new_state is not None and rs.metrics["num_examples"] == 100 and rs.metrics["uploaders"] == 3
    assert _mean_error(rs, nodes) < 1e-4  # lean; the default profile's 1e-6 is checked in the integration tests
    types = {s.message_type for s in messenger.sent}
    assert (MessageType.XMK_KEY_PROPOSAL in types) == (threat != "honest-but-curious")
    assert (MessageType.XMK_REVEAL in types) == (threat == "malicious-colluding")
    assert (MessageType.XMK_CONSISTENCY in types) == (threat != "honest-but-curious")
    second = round_state(ctx, 2)
    _run(ctx, second, secure_stages(ctx.cfg))  # the same epoch, no key setup messages
    assert second.metrics["key_epoch"] == rs.metrics["key_epoch"] and "epoch_members" not in second.metrics
    assert _mean_error(second, nodes) < 1e-4 and second.metrics["shares_used"] == 3


def test_key_setup_leaves_out_a_malformed_reply_and_needs_min_members() -> None:
    threat = "malicious"
    nodes = [EngineNode(i, 10, threat, garbage_at=MessageType.XMK_KEYGEN if i == 2 else "") for i in range(1, 5)]
    ctx, _ = _federation(threat, nodes)
    rs = round_state(ctx)
    KeySetupStage().run(ctx, rs)
    epoch = ctx.states.get(SecureState).epoch
    assert epoch is not None and sorted(epoch.members) == [1, 3, 4] and rs.node_ids == [1, 3, 4]
    assert rs.metrics["dropouts"] == {"keygen": 1} and epoch.weight_norm == 30
    few = [EngineNode(1, 10, threat), EngineNode(2, 10, threat, silent_at=MessageType.XMK_KEYGEN),
           EngineNode(3, 10, threat)]
    ctx2, _ = _federation(threat, few)
    with pytest.raises(RoundFailed, match="min_members"):
        KeySetupStage().run(ctx2, round_state(ctx2))


def test_a_silent_member_at_the_second_key_exchange_fails_the_epoch() -> None:
    threat = "malicious"
    nodes = [EngineNode(1, 10, threat), EngineNode(2, 10, threat, silent_at=MessageType.XMK_KEY_PROPOSAL),
             EngineNode(3, 10, threat), EngineNode(4, 10, threat)]
    ctx, _ = _federation(threat, nodes)
    with pytest.raises(RoundFailed, match="no key response"):
        KeySetupStage().run(ctx, round_state(ctx))
    assert ctx.states.get(Participation).excluded[1] == {2} and ctx.states.get(SecureState).epoch is None


def test_a_node_that_does_not_upload_is_left_out_of_the_upload_set() -> None:
    threat = "malicious"
    nodes = [EngineNode(i, 10 * i, threat, silent_at=MessageType.XMK_TRAIN if i == 4 else "") for i in range(1, 5)]
    ctx, _ = _federation(threat, nodes)
    rs = round_state(ctx)
    _run(ctx, rs, secure_stages(ctx.cfg))
    assert rs.metrics["uploaders"] == 3 and rs.metrics["dropouts"] == {"upload": 1}
    assert _mean_error(rs, nodes[:3]) < 1e-4  # the FedAvg of U, with the silent node's weight left out


def test_too_few_uploads_fail_the_round() -> None:
    threat = "malicious"
    nodes = [EngineNode(1, 10, threat), EngineNode(2, 10, threat, silent_at=MessageType.XMK_TRAIN),
             EngineNode(3, 10, threat)]
    ctx, _ = _federation(threat, nodes)
    rs = round_state(ctx)
    KeySetupStage().run(ctx, rs)
    with pytest.raises(RoundFailed, match="min_uploads"):
        UploadStage().run(ctx, rs)
    assert not ctx.states.get(SecureState).epoch.valid


@pytest.mark.parametrize(("stage", "mtype"), [(ConsistencyStage, MessageType.XMK_CONSISTENCY),
                                              (DecryptStage, MessageType.XMK_DECRYPT)])
@pytest.mark.parametrize("how", ["silent", "garbage"])
def test_a_member_missing_from_the_transcript_or_the_shares_fails_the_attempt(stage: type, mtype: str,
                                                                              how: str) -> None:
    threat = "malicious"
    bad = {"silent_at": mtype} if how == "silent" else {"garbage_at": mtype}
    nodes = [EngineNode(1, 10, threat), EngineNode(2, 10, threat, **bad), EngineNode(3, 10, threat)]
    ctx, _ = _federation(threat, nodes)
    rs = round_state(ctx)
    stages = secure_stages(ctx.cfg)
    upto = [s for s in stages[: [type(s) for s in stages].index(stage)]]
    _run(ctx, rs, upto)
    with pytest.raises(RoundFailed, match="retrying" if stage is ConsistencyStage else "skipped") as failed:
        stage().run(ctx, rs)
    # no share leaves before every signature, so a missing signature may be retried; once shares are out the
    # others never upload this round again, and the round is skipped
    assert failed.value.retry is (stage is ConsistencyStage)
    log = ctx.states.get(Participation)
    assert log.excluded[1] == {2} and not ctx.states.get(SecureState).epoch.valid and rs.new_state is None
    assert Stage.CONSISTENCY in log.dropouts or Stage.DECRYPT in log.dropouts


def test_stages_refuse_to_run_out_of_order() -> None:
    threat = "malicious"
    ctx, _ = _federation(threat, [EngineNode(i, 10, threat) for i in (1, 2, 3)])
    with pytest.raises(RoundFailed, match="key_setup"):
        UploadStage().run(ctx, round_state(ctx))
    KeySetupStage().run(ctx, round_state(ctx))
    with pytest.raises(RoundFailed, match="train stage"):
        DecryptStage().run(ctx, round_state(ctx))
