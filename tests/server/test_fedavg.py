"""Plaintext FedAvg in the staged workflow equals the example-weighted mean computed independently."""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, RecordDict

from bastionfl.client.app import app as client_app
from bastionfl.config import RunConfig
from bastionfl.protocol import config_record as task_config_record
from bastionfl.server.stages import AggregateFedAvg
from bastionfl.server.workflow import RoundState
from bastionfl.tasks.data import load_image_dataset
from bastionfl.tasks.models import build_model
from tests.flower_helpers import call, node_context


def test_fedavg_equals_weighted_mean_of_client_models() -> None:
    cfg = RunConfig.build(partition="dirichlet", alpha=0.5, num_clients=3)  # unequal partition sizes
    data = load_image_dataset("digits")
    torch.manual_seed(0)
    global_state = build_model("cnn", data.in_channels, data.num_classes).state_dict()
    content = RecordDict({"arrays": ArrayRecord(global_state), "config": task_config_record(cfg, 1)})
    replies = [call(client_app, content, "train", node_context(i, 3)) for i in range(3)]
    assert not any(r.has_error() for r in replies), [r.error for r in replies if r.has_error()]

    rs = RoundState(1, global_state)
    rs.replies = replies
    AggregateFedAvg().run(None, rs)  # type: ignore[arg-type]  # aggregation reads no server context
    assert rs.new_state is not None

    models = [r.content["arrays"].to_torch_state_dict() for r in replies]
    counts = torch.tensor([float(r.content["metrics"]["num-examples"]) for r in replies], dtype=torch.float64)
    assert len(set(counts.tolist())) > 1, "partition sizes should differ for this test to mean something"
    for key, value in global_state.items():
        stacked = torch.stack([m[key].to(torch.float64) for m in models])
        expected = (stacked * counts.view(-1, *([1] * (stacked.dim() - 1)))).sum(0) / counts.sum()
        got = rs.new_state[key].to(torch.float64)
        if value.is_floating_point():
            assert torch.allclose(got, expected, atol=1e-6, rtol=0), key
        else:
            assert torch.equal(got, expected.round()), key
        assert rs.new_state[key].dtype == value.dtype
    # clients really trained: the mean differs from the starting model
    assert any(not torch.equal(rs.new_state[k], global_state[k]) for k in global_state)


def test_client_query_and_evaluate_actions() -> None:
    cfg = RunConfig.build(num_clients=2)
    data = load_image_dataset("digits")
    state = build_model("cnn", data.in_channels, data.num_classes).state_dict()
    ctx = node_context(1, 2)
    info = call(client_app, RecordDict({"config": task_config_record(cfg, 0)}), "query", ctx)
    assert info.content["info"]["partition-id"] == 1 and info.content["info"]["num-examples"] > 600
    ev = call(client_app, RecordDict({"arrays": ArrayRecord(state), "config": task_config_record(cfg, 0)}),
              "evaluate", ctx)
    assert 0.0 <= ev.content["metrics"]["accuracy"] <= 1.0


def test_client_without_partition_config_replies_with_error() -> None:
    ctx = node_context(0, 2)
    ctx.node_config.clear()
    reply = call(client_app, RecordDict({"config": task_config_record(RunConfig(), 0)}), "query", ctx)
    assert reply.has_error() and "partition-id" in reply.error.reason
