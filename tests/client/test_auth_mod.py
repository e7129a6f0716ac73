"""The admission Mod through a ClientApp, driven by the real AdmissionStage over an in-process grid.

The grid serialises every message to protobuf and back, as Flower's transport does, so tags are checked on what a
node really receives.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from bastionfl.auth import FileCredentialStore, HomeAuthority, load_or_create_kek
from bastionfl.client.auth_mod import auth_mod
from bastionfl.protocol.admission import HANDSHAKE_RECORD, TAG_RECORD, content_digest
from bastionfl.config import RunConfig
from bastionfl.server.admission import AdmissionStage
from bastionfl.server.messaging import Messenger
from bastionfl.server.workflow import RoundFailed, RoundState, ServerContext
from tests.flower_helpers import LoopGrid, node_context, wire

SERVER = "fl-server"
RUN_ID = 1


def _client_app(calls: list[str]) -> ClientApp:
    app = ClientApp(mods=[auth_mod])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        calls.append("train")
        w = msg.content["arrays"].to_numpy_ndarrays()[0]
        return Message(RecordDict({"arrays": ArrayRecord([w + 1.0]), "metrics": MetricRecord({"num-examples": 7})}),
                       reply_to=msg)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        calls.append("query")
        return Message(RecordDict({"info": MetricRecord({"ok": 1})}), reply_to=msg)

    return app


@pytest.fixture
def federation(tmp_path: Path) -> tuple[RunConfig, HomeAuthority, Path]:
    """An HA with three enrolled clients; credentials as simulation files cred-<i>.json."""
    auth = tmp_path / "auth"
    auth.mkdir()
    ha = HomeAuthority.open(auth / "ha.sqlite", load_or_create_kek(auth / "ha.kek"))
    for i in range(3):
        FileCredentialStore(auth / f"cred-{i}.json").save(ha.enroll(f"client-{i}", [SERVER]))
    cfg = RunConfig.build(auth="pseudonym", auth_server_id=SERVER, out_dir=str(tmp_path), num_clients=3)
    yield cfg, ha, auth
    ha.store.close()


def _setup(cfg: RunConfig, calls: list[str]) -> tuple[LoopGrid, ServerContext]:
    contexts = {100 + i: node_context(i, 3) for i in range(3)}
    grid = LoopGrid(_client_app(calls), contexts)
    ctx = ServerContext(grid=grid, cfg=cfg, task=None)
    return grid, ctx


def _admit(ctx: ServerContext, server_round: int) -> RoundState:
    rs = RoundState(server_round, {})
    rs.node_ids = sorted(ctx.grid.get_node_ids())
    AdmissionStage().run(ctx, rs)
    return rs


def _train_content(server_round: int, auth: str = "pseudonym") -> RecordDict:
    return RecordDict({"arrays": ArrayRecord([np.zeros(4, dtype=np.float32)]),
                       "config": ConfigRecord({"round": server_round, "auth": auth})})


def _train(ctx: ServerContext, rs: RoundState) -> tuple[list[Message], list[int]]:
    return rs.messenger(ctx).exchange("train", "train", rs.node_ids, lambda _n: _train_content(rs.server_round),
                                      group_id=str(rs.server_round))


def _refused(reply: Message) -> bool:
    return reply.has_error() and reply.error.code == ErrorCode.MOD_FAILED_PRECONDITION


def test_handshake_then_tagged_train_is_accepted_and_reply_verified(federation) -> None:
    cfg, _, _ = federation
    calls: list[str] = []
    grid, ctx = _setup(cfg, calls)
    rs = _admit(ctx, 1)
    assert rs.node_ids == [100, 101, 102] and rs.metrics["auth_admitted"] == 3 and rs.metrics["auth_rejected"] == 0
    assert calls == []  # the handshake never reached the query handler
    handshake = [m for m in grid.sent if HANDSHAKE_RECORD in m.content.config_records]
    assert len(handshake) == 9 and {m.metadata.message_type for m in handshake} == {"query"}
    replies, failed = _train(ctx, rs)
    assert failed == [] and len(replies) == 3 and calls == ["train"] * 3
    for reply in replies:  # tag checked and removed by the server; the stage sees the handler's content
        assert TAG_RECORD not in reply.content.config_records
        assert reply.content["arrays"].to_numpy_ndarrays()[0].tolist() == [1.0] * 4
    assert all(TAG_RECORD in m.content.config_records for m in grid.sent[-3:])


def test_untagged_forged_replayed_and_other_round_messages_are_refused(federation) -> None:
    cfg, _, _ = federation
    calls: list[str] = []
    grid, ctx = _setup(cfg, calls)
    rs = _admit(ctx, 1)
    _train(ctx, rs)
    tagged = grid.sent[-1]
    calls.clear()

    replay = grid.deliver(tagged)
    assert _refused(replay) and "pseudonym admission" in replay.error.reason

    untagged = Message(_train_content(1), dst_node_id=tagged.metadata.dst_node_id, message_type="train")
    assert _refused(grid.deliver(untagged))

    forged_tag = wire(tagged)
    rec = forged_tag.content.config_records[TAG_RECORD]
    rec["seq"] = int(rec["seq"]) + 10  # a fresh seq, but the tag was made for the old one
    assert _refused(grid.deliver(forged_tag))

    for flip in range(0, 32, 7):
        forged = wire(tagged)
        rec = forged.content.config_records[TAG_RECORD]
        rec["seq"] = int(rec["seq"]) + 20 + flip
        tag = bytearray(rec["tag"])
        tag[flip] ^= 1
        rec["tag"] = bytes(tag)
        assert _refused(grid.deliver(forged))

    changed = wire(tagged)  # same tag, altered content (a different model)
    changed.content["arrays"] = ArrayRecord([np.ones(4, dtype=np.float32)])
    assert _refused(grid.deliver(changed))

    retyped = Message(tagged.content, dst_node_id=tagged.metadata.dst_node_id, message_type="query")
    assert _refused(grid.deliver(retyped))  # the tag binds the message type

    assert calls == []

    rs2 = _admit(ctx, 2)  # round 2: new handshake, new session key
    assert rs2.metrics["auth_admitted"] == 3
    old = wire(tagged)
    old.content.config_records["config"]["round"] = 2
    old.content.config_records[TAG_RECORD]["seq"] = 5
    assert _refused(grid.deliver(old))  # a round-1 tag under the round-2 session
    stale = Message(_train_content(1), dst_node_id=tagged.metadata.dst_node_id, message_type="train")
    assert _refused(grid.deliver(stale))  # a message for round 1 after round 2 began
    assert calls == []
    replies, failed = _train(ctx, rs2)
    assert failed == [] and len(replies) == 3


def test_downgrade_to_auth_none_within_an_admitted_run_is_refused(federation) -> None:
    cfg, _, _ = federation
    calls: list[str] = []
    grid, ctx = _setup(cfg, calls)
    _admit(ctx, 1)
    msg = Message(_train_content(1, auth="none"), dst_node_id=100, message_type="train")
    assert _refused(grid.deliver(msg)) and calls == []


def test_auth_none_passes_through_untouched() -> None:
    calls: list[str] = []
    app = _client_app(calls)
    context = node_context(0, 3)
    msg = Message(_train_content(1, auth="none"), dst_node_id=context.node_id, message_type="train")
    reply = app(msg, context)
    assert not reply.has_error() and calls == ["train"]
    assert set(reply.content.keys()) == {"arrays", "metrics"}
    assert len(context.state.config_records) == 0  # the Mod kept nothing
    plain = RecordDict({"config": ConfigRecord({"round": 1})})  # no auth key at all
    assert not app(Message(plain, dst_node_id=context.node_id, message_type="query"), context).has_error()


def test_server_drops_replies_with_bad_tags_and_stops_sending_to_that_node(federation) -> None:
    cfg, _, _ = federation
    grid, ctx = _setup(cfg, [])
    rs = _admit(ctx, 1)

    def tamper(reply: Message) -> Message:
        if reply.metadata.src_node_id == 101 and not reply.has_error():
            reply.content["metrics"] = MetricRecord({"num-examples": 7000})  # inflate the weight in transit
        return reply

    grid.tamper_reply = tamper
    replies, failed = _train(ctx, rs)
    assert failed == [101] and sorted(r.metadata.src_node_id for r in replies) == [100, 102]
    assert rs.metrics["auth_dropped"] == 1 and any("session tag" in e for e in rs.events)
    grid.tamper_reply = None
    before = len(grid.sent)
    replies, failed = _train(ctx, rs)
    assert sorted(m.metadata.dst_node_id for m in grid.sent[before:]) == [100, 102]
    assert failed == [101] and len(replies) == 2


@pytest.mark.skipif(not hasattr(Messenger, "exchange_streaming"), reason="no streaming exchange in this tree")
def test_streaming_exchange_is_tagged_and_verified(federation) -> None:
    cfg, _, _ = federation
    grid, ctx = _setup(cfg, [])
    rs = _admit(ctx, 1)
    grid.tamper_reply = lambda r: (r.content.config_records["auth-tag"].__setitem__("seq", 99) or r
                                   if r.metadata.src_node_id == 102 and not r.has_error() else r)
    seen: list[int] = []
    failed = rs.messenger(ctx).exchange_streaming(
        "train", "train", rs.node_ids, lambda _n: _train_content(1), "1",
        lambda reply: seen.append(reply.metadata.src_node_id) or TAG_RECORD not in reply.content.config_records)
    assert sorted(seen) == [100, 101] and failed == [102] and rs.metrics["auth_dropped"] == 1


def test_direct_grid_sends_through_the_round_messenger_fail_closed(federation) -> None:
    cfg, _, _ = federation
    grid, ctx = _setup(cfg, [])
    rs = _admit(ctx, 1)
    messenger = rs.messenger(ctx)
    assert sorted(messenger.grid.get_node_ids()) == [100, 101, 102]  # reads pass
    with pytest.raises(RuntimeError, match="tagged"):
        messenger.grid.send_and_receive([Message(_train_content(1), dst_node_id=100, message_type="train")])


def test_revoked_and_credentialless_nodes_are_not_admitted(federation) -> None:
    cfg, ha, auth = federation
    grid, ctx = _setup(cfg, [])
    assert _admit(ctx, 1).metrics["auth_admitted"] == 3
    ha.revoke("client-1")
    (auth / "cred-2.json").unlink()
    rs = _admit(ctx, 2)
    assert rs.node_ids == [100] and rs.metrics["auth_rejected"] == 2
    before = len(grid.sent)
    _train(ctx, rs)
    assert [m.metadata.dst_node_id for m in grid.sent[before:]] == [100]
    ha.revoke("client-0")
    with pytest.raises(RoundFailed, match="no node passed admission"):
        _admit(ctx, 3)


def test_deployment_credential_from_node_config(federation, tmp_path: Path) -> None:
    cfg, ha, _ = federation
    cred = tmp_path / "node.cred"
    FileCredentialStore(cred).save(ha.enroll("deployed-node", [SERVER]))
    context = node_context(7, 8, node_id=555)
    context.node_config["auth-cred"] = str(cred)
    context.node_config["partition-id"] = 99  # would name a missing file if the simulation path were used
    grid = LoopGrid(_client_app([]), {555: context})
    ctx = ServerContext(grid=grid, cfg=cfg, task=None)
    rs = _admit(ctx, 1)
    assert rs.node_ids == [555]
    assert len(_train(ctx, rs)[0]) == 1
    # the round context uses the node's own id: a handshake addressed under another node id fails
    grid.contexts = {556: context}
    with pytest.raises(RoundFailed):
        _admit(ctx, 2)


def test_handshake_replies_have_fixed_sizes_and_no_secret_is_logged(federation, caplog) -> None:
    cfg, ha, auth = federation
    caplog.set_level(logging.DEBUG)
    grid, ctx = _setup(cfg, [])
    creds = [FileCredentialStore(auth / f"cred-{i}.json").load() for i in range(3)]
    (auth / "cred-2.json").unlink()  # one failing node, so warnings are logged too
    rs = _admit(ctx, 1)
    _train(ctx, rs)
    secrets = [c.cid for c in creds] + [c.key for c in creds] + [c.pid for c in creds if c.pid]
    secrets += [FileCredentialStore(auth / f"cred-{i}.json").load().pid for i in range(2)]
    for nid in (100, 101):
        rec = grid.contexts[nid].state.config_records["bastionfl.auth.session"]
        secrets.append(bytes(rec["key"]))
    text = caplog.text + "".join(repr(r.args) for r in caplog.records)
    assert caplog.records, "expected warnings about the node without a credential"
    for secret in secrets:
        assert secret.hex() not in text and secret.hex().upper() not in text and repr(secret) not in text
    sizes = {}
    for m in grid.sent:
        if HANDSHAKE_RECORD in m.content.config_records:
            sizes.setdefault(m.content.config_records[HANDSHAKE_RECORD]["step"], set()).add(
                len(m.content.config_records[HANDSHAKE_RECORD].get("msg2", m.content.config_records[
                    HANDSHAKE_RECORD].get("msg4", b""))))
    assert sizes["respond"] == {80} and sizes["finish"] == {32}


def test_content_digest_is_canonical() -> None:
    a = RecordDict({"config": ConfigRecord({"x": 1, "y": [1.5, 2.5], "z": b"\x00"}),
                    "arrays": ArrayRecord([np.arange(3, dtype=np.float32)])})
    b = RecordDict({"arrays": ArrayRecord([np.arange(3, dtype=np.float32)]),
                    "config": ConfigRecord({"z": b"\x00", "y": [1.5, 2.5], "x": 1})})
    assert content_digest(a) == content_digest(b) == content_digest(wire(
        Message(a, dst_node_id=1, message_type="train")).content)
    tagged = RecordDict(dict(a.items()))
    tagged[TAG_RECORD] = ConfigRecord({"seq": 0, "tag": b"\x01" * 32})
    assert content_digest(tagged) == content_digest(a)  # the tag is not part of what it covers
    for variant in (ConfigRecord({"x": True, "y": [1.5, 2.5], "z": b"\x00"}),  # bool is not int
                    ConfigRecord({"x": 1, "y": [1.5, 2.5], "z": "\x00"}),  # str is not bytes
                    ConfigRecord({"x": 1, "y": [1.5], "z": b"\x00"})):
        c = RecordDict(dict(a.items()))
        c["config"] = variant
        assert content_digest(c) != content_digest(a)
    m = RecordDict({"config": a["config"]})
    m_as_metrics = RecordDict({"config": MetricRecord({"x": 1})})
    assert content_digest(m) != content_digest(m_as_metrics)
