"""The repair guard: a repair that costs validation accuracy is retried gentler or discarded, never released."""

from __future__ import annotations

import torch
from torch import nn

from bastionfl.config import RunConfig
from bastionfl.server.repair_guard import GENTLER_LR_SCALE, guarded_repair, split_clean
from bastionfl.tasks.base import ClientData


class _Task:
    """Scores a model by its single weight: accuracy = the weight's value."""

    def evaluate_on(self, model: nn.Module, data: ClientData) -> tuple[float, float]:
        return 0.0, float(model.w)


class _Model(nn.Module):
    def __init__(self, w: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))


def _cfg() -> RunConfig:
    return RunConfig.build(repair="finetune", clean_set_size=200, repair_max_ca_drop=1.0)


def _clean() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(100, 1, 8, 8), torch.arange(100) % 10


def test_split_is_disjoint_seeded_and_sized() -> None:
    x, y = _clean()
    (rx, ry), (vx, vy) = split_clean((x, y), 0.5, seed=3)
    assert len(ry) == len(vy) == 50
    again = split_clean((x, y), 0.5, seed=3)
    assert torch.equal(again[1][0], vx)
    rows = {tuple(r.flatten().tolist()) for r in rx}
    assert not any(tuple(r.flatten().tolist()) in rows for r in vx)
    texts = split_clean((["a", "b", "c", "d"], [0, 1, 0, 1]), 0.5, seed=0)
    assert sorted(texts[0][0] + texts[1][0]) == ["a", "b", "c", "d"]


def _repair_costing(costs: list[float]):  # noqa: ANN202
    calls: list[float] = []

    def repair(task, model, clean, seed, saved, schedule):  # noqa: ANN001, ANN202
        calls.append(schedule.lr_scale)
        return _Model(float(model.w) - costs[len(calls) - 1]), {"defense": "fake"}, None

    return repair, calls


def test_harmful_repair_is_discarded_and_gentler_retry_can_pass() -> None:
    model = _Model(0.9)
    harmful, calls = _repair_costing([0.10, 0.05])
    out = guarded_repair(_Task(), _cfg(), harmful, model, _clean(), 0, None)
    assert out.outcome == "discarded" and out.model is model and calls == [1.0, GENTLER_LR_SCALE]
    assert out.metrics()["repair_val_acc_after"] == out.metrics()["repair_val_acc_before"]
    gentler, calls = _repair_costing([0.10, 0.005])
    out = guarded_repair(_Task(), _cfg(), gentler, model, _clean(), 0, None)
    assert out.outcome == "accepted-gentler" and calls == [1.0, GENTLER_LR_SCALE] and float(out.model.w) < 0.9
    harmless, _ = _repair_costing([0.0])
    assert guarded_repair(_Task(), _cfg(), harmless, model, _clean(), 0, None).outcome == "accepted"
