"""The t-of-n path of the secure-aggregation stages against engine-driven fake nodes: a decrypting member that
goes silent makes a new attempt (no restart, same epoch), fewer than t signers fail cleanly, and the epoch is
renewed only when the members that answered fall below t + margin."""

from __future__ import annotations

import dataclasses

import pytest
from flwr.app import ArrayRecord, RecordDict

from bastionfl.config import Auth, RunConfig
from bastionfl.crypto import ClientPolicy, ThresholdRule
from bastionfl.protocol import Key, MessageType, Record, array_blob, blob_array
from bastionfl.server.secure import SecureState, secure_stages
from bastionfl.server.workflow import RoundFailed
from tests.server.fakes import round_state, stage_context
from tests.server.test_secure_stages import PROFILE, EngineNode, _mean_error, _run

THREAT = "malicious"


class ThresholdNode(EngineNode):
    """``EngineNode`` with a t-of-n policy: it deals its shares at K2 and combines those dealt to it;
    ``silent_if_first``: silent at decryption if it is member 0 (always in the first decrypting set)."""

    def __init__(self, nid: int, count: int, rule: ThresholdRule, silent_if_first: bool = False, **kw: str) -> None:
        super().__init__(nid, count, THREAT, **kw)
        self.policy = ClientPolicy(THREAT, 3, 3, 10, False, rule)
        self.silent_if_first = silent_if_first

    def __call__(self, mtype: str, content: RecordDict) -> RecordDict | None:
        if mtype == MessageType.XMK_DECRYPT and self.silent_if_first and self.epoch.index == 0:
            return None
        out = super().__call__(mtype, content)
        xmk = content[Record.XMK] if Record.XMK in content.array_records else None
        if out is not None and mtype == MessageType.XMK_KEY_PROPOSAL and mtype != self.garbage_at:
            out[Record.XMK] = ArrayRecord({Key.KEY_RESPONSE: out[Record.XMK][Key.KEY_RESPONSE],
                                           Key.DEALING: blob_array(self.epoch.deal_shares())})
        if xmk is not None and Key.DEALT in xmk and self.epoch is not None and not self.epoch.threshold.ready:
            self.epoch.on_dealt_shares(array_blob(xmk[Key.DEALT]))
        return out


def _federation(nodes: list[ThresholdNode], **settings: object):  # noqa: ANN202
    cfg = RunConfig.build(num_clients=len(nodes), secure_aggregation="xmkckks", he_profile=PROFILE,
                          threat_model=THREAT, threshold=0.6, auth="pseudonym", **settings)
    # the stages alone: the Home Authority's roster is exercised in tests/integration/test_threshold_federation.py
    cfg = dataclasses.replace(cfg, admission=dataclasses.replace(cfg.admission, mode=Auth.NONE))
    by_id = {n.nid: n for n in nodes}
    return stage_context(cfg, sorted(by_id), lambda nid, mtype, content: by_id[nid](mtype, content))


RULE = ThresholdRule.parse(0.6)


def test_a_silent_decrypting_member_makes_a_new_attempt_not_a_restart() -> None:
    nodes = [ThresholdNode(i, 10 * i, RULE, silent_if_first=True) for i in range(1, 6)]  # t = 3 of 5
    ctx, _ = _federation(nodes)
    rs = round_state(ctx)
    _run(ctx, rs, secure_stages(ctx.cfg))
    assert rs.new_state is not None and rs.metrics["uploaders"] == 5 and rs.metrics["shares_used"] == 3
    assert rs.metrics["decrypt_attempts"] == 2 and rs.metrics["dropouts"] == {"decrypt": 1}
    assert _mean_error(rs, nodes) < 1e-4  # the FedAvg of every upload, the silent node's included
    epoch = ctx.states.get(SecureState).epoch
    assert epoch.valid and epoch.live == 4
    second = round_state(ctx, 2)
    _run(ctx, second, secure_stages(ctx.cfg))  # 4 live >= t + margin (3 + 1): the same epoch
    assert second.metrics["key_epoch"] == rs.metrics["key_epoch"] and "epoch_members" not in second.metrics


def test_below_t_plus_margin_the_epoch_is_renewed() -> None:
    nodes = [ThresholdNode(i, 10, RULE, silent_if_first=True) for i in range(1, 6)]
    ctx, _ = _federation(nodes, threshold_margin=2)
    rs = round_state(ctx)
    _run(ctx, rs, secure_stages(ctx.cfg))
    second = round_state(ctx, 2)
    _run(ctx, second, secure_stages(ctx.cfg))  # 4 live < 3 + 2: a new key epoch
    assert second.metrics["key_epoch"] == rs.metrics["key_epoch"] + 1, (second.metrics, rs.metrics)


def test_fewer_than_t_live_signers_fail_cleanly() -> None:
    nodes = [ThresholdNode(i, 10, RULE, silent_at=MessageType.XMK_DECRYPT if i <= 3 else "") for i in range(1, 6)]
    ctx, _ = _federation(nodes)
    rs = round_state(ctx)
    with pytest.raises(RoundFailed, match="nothing is decrypted"):
        _run(ctx, rs, secure_stages(ctx.cfg))
    assert rs.new_state is None and not ctx.states.get(SecureState).epoch.valid
