"""Each plaintext stage on its own, against a scripted messenger: sampling, training, FedAvg, evaluation, repair."""

from __future__ import annotations

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from bastionfl.config import RunConfig
from bastionfl.protocol import Key, MessageType, Record, Stage
from bastionfl.server.repair import RepairStage, RepairState
from bastionfl.server.stages import AggregateFedAvg, EvaluateCentral, Participation, SampleNodes, TrainPlain
from bastionfl.server.workflow import RoundFailed, StageStates
from tests.server.fakes import FakeGrid, round_state, stage_context


def _trainer(deltas: dict[int, float], counts: dict[int, int]):  # noqa: ANN202
    """Fake nodes that add a node-specific constant to every weight and report a node-specific example count."""

    def respond(nid: int, mtype: str, content: RecordDict) -> RecordDict | None:
        assert mtype == MessageType.TRAIN
        if nid not in deltas:
            return None
        state = content[Record.ARRAYS].to_torch_state_dict()
        new = {k: (v + deltas[nid]) if v.is_floating_point() else v for k, v in state.items()}
        return RecordDict({Record.ARRAYS: ArrayRecord(new),
                           Record.METRICS: MetricRecord({Key.NUM_EXAMPLES: counts[nid], Key.TRAIN_LOSS: 1.0 + nid}),
                           Record.CLIENT_METRICS: ConfigRecord({"train_s": 0.1})})

    return respond


def test_sampling_is_seeded_excludes_dropped_nodes_and_fails_without_nodes() -> None:
    cfg = RunConfig.build(num_clients=4, fraction_train=0.5, stage_timeout_s=0.3)
    ctx, _ = stage_context(cfg, [11, 12, 13, 14], lambda *a: None)
    picks = []
    for _ in range(2):
        rs = round_state(ctx, 3, [])
        SampleNodes().run(ctx, rs)
        picks.append(rs.node_ids)
    assert len(picks[0]) == 2 and picks[0] == picks[1] and set(picks[0]) <= {11, 12, 13, 14}
    ctx.states.get(Participation).exclude(3, picks[0])
    rs = round_state(ctx, 3, [])
    SampleNodes().run(ctx, rs)
    assert not set(rs.node_ids) & set(picks[0])  # the retry of round 3 runs without the nodes that dropped out
    ctx.grid = FakeGrid([])  # type: ignore[assignment]
    with pytest.raises(RoundFailed, match="no nodes connected"):
        SampleNodes().run(ctx, round_state(ctx, 4, []))


def test_train_collects_replies_notes_failures_and_fails_when_none_answers() -> None:
    cfg = RunConfig.build(num_clients=3)
    ctx, messenger = stage_context(cfg, [1, 2, 3], _trainer({1: 0.1, 3: 0.3}, {1: 10, 3: 30}))
    rs = round_state(ctx)
    TrainPlain().run(ctx, rs)
    assert sorted(r.metadata.src_node_id for r in rs.replies) == [1, 3]
    assert rs.events == ["train: 1 node(s) failed or timed out"]
    sent = messenger.sent[0].content[Record.CONFIG]
    assert sent[Key.ROUND] == 1 and "out_dir" not in sent and "auth_ha_token_file" not in sent
    assert rs.bytes.by_stage[Stage.TRAIN]["up"] > 0 and rs.bytes.by_stage[Stage.TRAIN]["down"] > 0
    ctx2, _ = stage_context(cfg, [1, 2], _trainer({}, {}))
    with pytest.raises(RoundFailed, match="no node returned"):
        TrainPlain().run(ctx2, round_state(ctx2))


def test_fedavg_is_the_weighted_mean_and_does_not_depend_on_the_reply_order() -> None:
    cfg = RunConfig.build(num_clients=3)
    deltas, counts = {1: 0.1, 2: -0.2, 3: 0.05}, {1: 10, 2: 30, 3: 60}
    ctx, _ = stage_context(cfg, [1, 2, 3], _trainer(deltas, counts))
    rs = round_state(ctx)
    TrainPlain().run(ctx, rs)
    results = []
    for order in (rs.replies, list(reversed(rs.replies)), rs.replies[1:] + rs.replies[:1]):
        again = round_state(ctx)
        again.replies = list(order)
        AggregateFedAvg().run(ctx, again)
        results.append(again)
    first = results[0].new_state
    assert first is not None
    for other in results[1:]:
        assert all(torch.equal(first[k], other.new_state[k]) for k in first)  # bit for bit
    mean = sum(deltas[n] * counts[n] for n in deltas) / sum(counts.values())
    key = next(k for k, v in rs.global_state.items() if v.is_floating_point())
    assert torch.allclose(first[key] - rs.global_state[key], torch.full_like(first[key], mean), atol=1e-6)
    assert results[0].metrics["num_examples"] == 100 and set(results[0].metrics["client_metrics"]) == {"1", "2", "3"}


def test_evaluation_reports_accuracy_and_the_attack_success_rate() -> None:
    ctx, _ = stage_context(RunConfig.build(attack="badnets", poisoned_clients=1), [1], lambda *a: None)
    rs = round_state(ctx)
    EvaluateCentral().run(ctx, rs)
    assert 0.0 <= rs.metrics["accuracy"] <= 1.0 and rs.metrics["loss"] > 0 and 0.0 <= rs.metrics["asr"] <= 1.0
    plain, _ = stage_context(RunConfig(), [1], lambda *a: None)
    rs = round_state(plain)
    EvaluateCentral().run(plain, rs)
    assert "asr" not in rs.metrics


def test_repair_runs_in_the_last_rounds_only_and_keeps_rnp_masks_across_a_checkpoint() -> None:
    cfg = RunConfig.build(repair="rnp", clean_set_size=100, repair_max_ca_drop=2, rounds=3, repair_last_rounds=1,
                          rnp_prune_by="number",
                          rnp_unlearn_stop_acc=0.3)
    ctx, _ = stage_context(cfg, [1], lambda *a: None)
    early = round_state(ctx, 1)
    early.new_state = dict(early.global_state)
    RepairStage().run(ctx, early)
    assert "repair" not in early.metrics  # rounds 1 and 2 only re-apply saved masks (none yet)
    last = round_state(ctx, 3)
    last.new_state = dict(last.global_state)
    RepairStage().run(ctx, last)
    assert last.metrics["repair"]["defense"] == "rnp" and last.metrics["repair_s"] > 0
    assert (last.metrics["repair"]["cfg_prune_by"], last.metrics["repair"]["cfg_unlearn_stop_acc"]) == ("number", 0.3)
    state = ctx.states.get(RepairState)
    saved = ctx.states.checkpoint()
    assert saved["rnp_mask"] == state.mask and set(state.mask)
    restored = StageStates()
    restored.restore(saved, [RepairState, Participation])
    assert restored.get(RepairState).mask == state.mask
    no_model = round_state(ctx, 3)
    with pytest.raises(RoundFailed, match="aggregated model"):
        RepairStage().run(ctx, no_model)


def test_fine_pruning_mask_persists_across_repair_rounds_and_a_checkpoint() -> None:
    cfg = RunConfig.build(repair="fineprune", clean_set_size=100, repair_max_ca_drop=100, rounds=3,
                          repair_epochs=1, fineprune_max_drop=100, fineprune_max_fraction=0.25)
    ctx, _ = stage_context(cfg, [1], lambda *a: None)
    first = round_state(ctx, 1)
    first.new_state = dict(first.global_state)
    RepairStage().run(ctx, first)
    rep = first.metrics["repair"]
    assert rep["defense"] == "fineprune" and rep["layer"] == "stage3.2"
    assert first.metrics["repair_outcome"] == "accepted"
    assert rep["pruned_channels"] == 16 and (rep["cfg_max_drop"], rep["cfg_max_fraction"]) == (100.0, 0.25)
    state = ctx.states.get(RepairState)
    pruned1 = [i for i, k in enumerate(state.mask["stage3.2"]) if not k]
    assert len(pruned1) == 16 and all(first.new_state[f"stage3.2.{p}"][pruned1].abs().sum() == 0
                                      for p in ("weight", "bias"))
    second = round_state(ctx, 2)  # the clients trained the released model: the pruned channels came back
    second.new_state = {k: v.clone() for k, v in first.new_state.items()}
    second.new_state["stage3.2.weight"][pruned1] = 1.0
    second.new_state["stage3.2.bias"][pruned1] = 0.5
    RepairStage().run(ctx, second)
    pruned2 = [i for i, k in enumerate(ctx.states.get(RepairState).mask["stage3.2"]) if not k]
    assert set(pruned1) <= set(pruned2) and len(pruned2) == 16  # the saved channels count towards the 25 %
    assert second.metrics["repair"]["pruned_before"] == 16
    for p in ("weight", "bias"):
        assert second.new_state[f"stage3.2.{p}"][pruned2].abs().sum() == 0
    restored = StageStates()
    restored.restore(ctx.states.checkpoint(), [RepairState, Participation])
    assert restored.get(RepairState).mask == ctx.states.get(RepairState).mask


def test_participation_counts_dropouts_per_stage_and_survives_a_checkpoint() -> None:
    ctx, _ = stage_context(RunConfig(), [1], lambda *a: None)
    rs = round_state(ctx)
    log = ctx.states.get(Participation)
    log.dropped(rs, Stage.UPLOAD, [4, 5])
    log.dropped(rs, Stage.DECRYPT, [6])
    log.dropped(rs, Stage.UPLOAD, [])
    assert rs.metrics["dropouts"] == {"upload": 2, "decrypt": 1} and len(rs.events) == 2
    restored = StageStates()
    restored.restore(ctx.states.checkpoint(), [Participation])
    assert restored.get(Participation).dropouts == {"upload": 2, "decrypt": 1}


def test_an_aggregate_with_a_negative_bn_variance_or_nan_is_refused_and_the_round_skipped() -> None:
    """Boosted clients can push the sum's BN variance below zero (a NaN model): the round must not release it."""
    from bastionfl.server.aggregate_check import CheckAggregate, invalid_tensors
    from bastionfl.server.federation import build_workflow

    cfg = RunConfig.build(num_clients=3)
    ctx, _ = stage_context(cfg, [1, 2, 3], _trainer({1: 0.01, 2: 0.02, 3: -6.0}, {1: 10, 2: 10, 3: 10}))
    rs = round_state(ctx)
    TrainPlain().run(ctx, rs)
    AggregateFedAvg().run(ctx, rs)  # variances start at 1: the mean moves them by about -2
    with pytest.raises(RoundFailed, match="aggregate refused: .*running_var \\(negative variance\\)") as failed:
        CheckAggregate().run(ctx, rs)
    assert failed.value.retry is False, "the same replies give the same sum: skip, do not retry"
    ok, _ = stage_context(cfg, [1, 2], _trainer({1: 0.01, 2: -0.02}, {1: 10, 2: 10}))
    rs_ok = round_state(ok)
    TrainPlain().run(ok, rs_ok)
    AggregateFedAvg().run(ok, rs_ok)
    CheckAggregate().run(ok, rs_ok)  # a valid aggregate passes untouched
    assert invalid_tensors({"w": torch.tensor([1.0, float("nan")]), "n": torch.tensor(3)}) == ["w (non-finite)"]
    assert invalid_tensors({"bn.running_var": torch.tensor([0.0, 1.0]), "w": torch.tensor([-1.0])}) == []
    for mode in ("none", "xmkckks"):
        names = build_workflow(RunConfig.build(secure_aggregation=mode, aggregate_clip=1.0)).stage_names
        assert names.index("check") < names.index("clip"), "the check sees the aggregate before any defense"
