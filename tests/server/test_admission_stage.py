"""The admission stage on its own, against a scripted messenger: enrolled nodes answer through the real client Mod,
a silent node and a node that answers garbage are refused, and later stages of the round reach only admitted nodes.
(Tag forgery, replay and downgrade are played against the Mod in tests/client/test_auth_mod.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from bastionfl.auth import FileCredentialStore, HomeAuthority, load_or_create_kek
from bastionfl.client.auth_mod import auth_mod
from bastionfl.config import RunConfig
from bastionfl.protocol import Key, MessageType, Record
from bastionfl.protocol.admission import HANDSHAKE_RECORD
from bastionfl.server.admission import AdmissionStage
from bastionfl.server.workflow import RoundFailed
from tests.flower_helpers import call, node_context
from tests.server.fakes import round_state, stage_context


def _app() -> ClientApp:
    app = ClientApp(mods=[auth_mod])

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        return Message(RecordDict({Record.INFO: MetricRecord({"ok": 1})}), reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:  # the model comes back as it went
        return Message(RecordDict({Record.ARRAYS: msg.content[Record.ARRAYS],
                                   Record.METRICS: MetricRecord({Key.NUM_EXAMPLES: 10})}), reply_to=msg)

    return app


@pytest.fixture
def cfg(tmp_path: Path) -> RunConfig:
    """An in-process HA with three enrolled clients (credential files cred-<i>.json)."""
    auth = tmp_path / "auth"
    auth.mkdir()
    ha = HomeAuthority.open(auth / "ha.sqlite", load_or_create_kek(auth / "ha.kek"))
    for i in range(3):
        FileCredentialStore(auth / f"cred-{i}.json").save(ha.enroll(f"client-{i}", ["fl-server"]))
    ha.store.close()
    return RunConfig.build(auth="pseudonym", out_dir=str(tmp_path), num_clients=4)


def _nodes(behaviour: dict[int, str]):  # noqa: ANN202
    """Node 100+i is partition i; ``honest`` answers through the Mod, ``silent`` never, ``garbage`` with noise."""
    app, contexts = _app(), {nid: node_context(nid - 100, 4, nid) for nid in behaviour}

    def respond(nid: int, mtype: str, content: RecordDict) -> RecordDict | None:
        kind = behaviour[nid]
        if kind == "silent":
            return None
        if kind == "garbage" and HANDSHAKE_RECORD in content.config_records:
            step = content.config_records[HANDSHAKE_RECORD]["step"]
            field = {"start": "msg1", "respond": "msg3", "finish": "ack"}[str(step)]
            return RecordDict({HANDSHAKE_RECORD: ConfigRecord({field: b"\x00" * 8})})
        reply = call(app, content, mtype, contexts[nid])
        if reply.has_error():
            raise RuntimeError(reply.error.reason)
        return reply.content

    return respond


def test_only_nodes_that_complete_the_handshake_stay_in_the_round(cfg: RunConfig) -> None:
    behaviour = {100: "honest", 101: "silent", 102: "honest", 103: "garbage"}
    ctx, messenger = stage_context(cfg, sorted(behaviour), _nodes(behaviour))
    rs = round_state(ctx)
    AdmissionStage().run(ctx, rs)
    assert rs.node_ids == [100, 102]
    assert (rs.metrics["auth_admitted"], rs.metrics["auth_rejected"]) == (2, 2)
    assert any("not admitted" in e for e in rs.events)
    sent_before = len(messenger.sent)
    replies, failed = rs.messenger(ctx).exchange("probe", MessageType.QUERY, [100, 101, 102, 103],
                                                 lambda _n: RecordDict({Record.CONFIG: ConfigRecord(
                                                     {"round": 1, "auth": "pseudonym"})}), group_id="1")
    assert sorted(r.metadata.src_node_id for r in replies) == [100, 102] and failed == [101, 103]
    assert {s.node for s in messenger.sent[sent_before:]} == {100, 102}  # refused nodes get nothing more


def test_a_round_where_nobody_is_admitted_fails(cfg: RunConfig) -> None:
    behaviour = {100: "silent", 101: "garbage"}
    ctx, _ = stage_context(cfg, sorted(behaviour), _nodes(behaviour))
    with pytest.raises(RoundFailed, match="no node passed admission"):
        AdmissionStage().run(ctx, round_state(ctx))


def _round(ctx, rs) -> None:  # noqa: ANN001
    from bastionfl.server.federation import build_workflow

    for stage in build_workflow(ctx.cfg).stages:
        if stage.name in ("aggregate", "evaluate"):
            break
        stage.run(ctx, rs)


def test_an_outsider_costs_a_run_at_most_one_admission_timeout(tmp_path: Path, cfg: RunConfig) -> None:
    """Attacker: a node that reaches the SuperLink and never answers, plus one that answers garbage; honest nodes
    answer at once. The run waits for the outsider once, for at most ``auth_timeout_s``: not in each stage, and not
    again in later rounds."""
    cfg = RunConfig.build(auth="pseudonym", out_dir=str(tmp_path), num_clients=4, auth_timeout_s=5.0,
                          stage_timeout_s=600.0)
    behaviour = {100: "honest", 101: "silent", 102: "honest", 103: "garbage"}
    ctx, messenger = stage_context(cfg, sorted(behaviour), _nodes(behaviour))
    for server_round in (1, 2, 3):
        before = messenger.clock
        rs = round_state(ctx, server_round, [])
        _round(ctx, rs)
        assert messenger.clock - before <= (5.0 if server_round == 1 else 0.0)  # once, not 600 s per stage
        assert rs.node_ids == [100, 102] and rs.metrics["auth_rejected"] == 2
    to_outsiders = [s for s in messenger.sent if s.node in (101, 103)]
    assert {s.message_type for s in to_outsiders} == {MessageType.QUERY}  # handshake messages only, never train


def test_unadmitted_nodes_never_take_a_sample_slot(tmp_path: Path, cfg: RunConfig) -> None:
    cfg = RunConfig.build(auth="pseudonym", out_dir=str(tmp_path), num_clients=4, fraction_train=0.5,
                          auth_timeout_s=5.0)
    behaviour = {100: "honest", 101: "silent", 102: "honest", 103: "garbage"}
    ctx, _ = stage_context(cfg, sorted(behaviour), _nodes(behaviour))
    for server_round in range(1, 6):
        rs = round_state(ctx, server_round, [])
        _round(ctx, rs)
        assert len(rs.node_ids) == 1 and set(rs.node_ids) <= {100, 102}


def test_a_node_silent_after_admission_is_waited_for_once(tmp_path: Path, cfg: RunConfig) -> None:
    """An admitted node that goes quiet at train costs that stage's timeout once; later stages skip it."""
    cfg = RunConfig.build(auth="pseudonym", out_dir=str(tmp_path), num_clients=3, auth_timeout_s=5.0,
                          stage_timeout_s=60.0)
    behaviour = {100: "honest", 101: "honest", 102: "honest"}
    inner = _nodes(behaviour)

    def respond(nid: int, mtype: str, content: RecordDict) -> RecordDict | None:
        return None if nid == 101 and mtype != MessageType.QUERY else inner(nid, mtype, content)

    ctx, messenger = stage_context(cfg, sorted(behaviour), respond)
    rs = round_state(ctx, 1, [])
    _round(ctx, rs)
    assert messenger.clock == pytest.approx(60.0)
    sent = len(messenger.sent)
    replies, failed = rs.messenger(ctx).exchange("probe", MessageType.TRAIN, rs.node_ids, lambda _n: RecordDict(
        {Record.CONFIG: ConfigRecord({"round": 1, "auth": "pseudonym"})}), group_id="1")
    assert 101 in failed and {s.node for s in messenger.sent[sent:]} == {100, 102}
    assert messenger.clock == pytest.approx(60.0)  # the probe stage did not wait for 101 again


def test_a_suspect_that_answers_again_is_admitted_again(tmp_path: Path, cfg: RunConfig) -> None:
    """A node silent in one round (a cut link) is not waited for later, yet is admitted when it answers."""
    cfg = RunConfig.build(auth="pseudonym", out_dir=str(tmp_path), num_clients=3, auth_timeout_s=5.0)
    behaviour = {100: "honest", 101: "silent", 102: "honest"}
    ctx, messenger = stage_context(cfg, sorted(behaviour), _nodes(behaviour))
    rs = round_state(ctx, 1, [])
    _round(ctx, rs)
    assert rs.node_ids == [100, 102] and messenger.clock == pytest.approx(5.0, abs=0.5)
    behaviour[101] = "honest"  # the link is back
    rs = round_state(ctx, 2, [])
    _round(ctx, rs)
    assert rs.node_ids == [100, 101, 102] and messenger.clock == pytest.approx(5.0, abs=0.5)


def test_when_every_node_is_a_suspect_admission_waits_for_them(tmp_path: Path, cfg: RunConfig) -> None:
    """Slow honest nodes that all missed one deadline are not shut out for good: with nobody else to wait for,
    admission waits for them again."""
    cfg = RunConfig.build(auth="pseudonym", out_dir=str(tmp_path), num_clients=2, auth_timeout_s=5.0)
    behaviour = {100: "silent", 101: "silent"}
    ctx, messenger = stage_context(cfg, sorted(behaviour), _nodes(behaviour))
    with pytest.raises(RoundFailed):
        AdmissionStage().run(ctx, round_state(ctx, 1, []))
    behaviour.update({100: "honest", 101: "honest"})
    rs = round_state(ctx, 2, [])
    AdmissionStage().run(ctx, rs)
    assert rs.node_ids == [100, 101]
