"""Fine-pruning on the backdoored digits model: ranking, both stop rules, zeroed channels, the clean-accuracy bound."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from bastionfl.defenses._common import accuracy
from bastionfl.defenses.fineprune import (
    FinePruneConfig,
    apply_fineprune_mask,
    channel_activation,
    fineprune_repair,
    last_conv_layer,
)
from bastionfl.defenses.finetune import FinetuneConfig
from bastionfl.tasks.models import build_model

Backdoored = dict[str, object]
GENTLE = FinetuneConfig(epochs=3, lr=0.01, augment=False)


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_last_conv_layer_is_the_stage_before_pooling() -> None:
    assert last_conv_layer(build_model("cnn", 1, 10)) == "stage3.2"
    assert last_conv_layer(build_model("wrn-16-1", 3, 10)) == "bn"
    with pytest.raises(ValueError, match="BatchNorm2d"):
        last_conv_layer(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))


def test_pruned_channels_are_the_least_active_and_read_zero_after_fine_tuning(backdoored: Backdoored) -> None:
    model, (cx, cy) = backdoored["model"], backdoored["clean"]
    before = copy.deepcopy(model)
    repaired, mask, report = fineprune_repair(model, cx, cy, cfg=FinePruneConfig(finetune=GENTLE), seed=0)
    assert _same(model, before), "caller's model must not change"
    keep = mask["stage3.2"]
    pruned = int((~keep).sum())
    assert pruned == report["pruned_channels"] > 0 and report["channels"] == keep.numel() == 64
    ranking = torch.argsort(channel_activation(model, cx), stable=True)
    assert set(ranking[:pruned].tolist()) == set((~keep).nonzero().flatten().tolist())
    after = channel_activation(repaired, cx)
    assert torch.all(after[~keep] == 0) and after[keep].sum() > 0
    again, mask2, _ = fineprune_repair(model, cx, cy, cfg=FinePruneConfig(finetune=GENTLE), seed=0)
    assert _same(repaired, again) and torch.equal(mask2["stage3.2"], keep)


def test_pruning_stops_at_max_fraction_and_at_max_drop(backdoored: Backdoored) -> None:
    model, (cx, cy) = backdoored["model"], backdoored["clean"]
    no_ft = FinetuneConfig(epochs=1, lr=1e-6, augment=False)
    _, mask, report = fineprune_repair(model, cx, cy, cfg=FinePruneConfig(max_drop=100.0, max_fraction=0.1,
                                                                          finetune=no_ft))
    assert report["pruned_channels"] == int(0.1 * 64) == int((~mask["stage3.2"]).sum())
    assert report["stopped_by"] == "max_fraction"
    for drop in (0.1, 4.0, 20.0):
        _, mask, report = fineprune_repair(model, cx, cy, cfg=FinePruneConfig(max_drop=drop, finetune=no_ft))
        assert report["stopped_by"] == "max_drop" and report["pruned_channels"] <= int(0.8 * 64)
        assert report["clean_acc_pruned"] >= report["clean_acc_before"] - drop / 100 - 1e-9, report
        # one more channel in the ranking would have broken the bound
        keep = mask["stage3.2"].clone()
        order = torch.argsort(channel_activation(model, cx), stable=True)
        keep[order[report["pruned_channels"]]] = False
        over = apply_fineprune_mask(copy.deepcopy(model), {"stage3.2": keep})
        assert accuracy(over, cx, cy) < report["clean_acc_before"] - drop / 100, (drop, report)


def test_fine_pruning_keeps_clean_accuracy_on_the_backdoored_model(backdoored: Backdoored) -> None:
    model, (cx, cy) = backdoored["model"], backdoored["clean"]
    repaired, _, report = fineprune_repair(model, cx, cy, cfg=FinePruneConfig(finetune=GENTLE), seed=1)
    assert report["clean_acc_pruned"] >= report["clean_acc_before"] - 0.04 - 1e-9
    assert accuracy(repaired, *backdoored["test"]) >= backdoored["ca"] - 0.04, report


def test_saved_mask_stays_pruned_and_counts_towards_max_fraction(backdoored: Backdoored) -> None:
    model, (cx, cy) = backdoored["model"], backdoored["clean"]
    saved = torch.ones(64, dtype=torch.bool)
    saved[[1, 2, 3]] = False
    cfg = FinePruneConfig(max_drop=100.0, max_fraction=0.1, finetune=GENTLE)
    repaired, mask, report = fineprune_repair(model, cx, cy, cfg=cfg, pruned={"stage3.2": saved})
    keep = mask["stage3.2"]
    assert not keep[[1, 2, 3]].any() and int((~keep).sum()) == 6 and report["pruned_before"] == 3
    assert torch.all(channel_activation(repaired, cx)[[1, 2, 3]] == 0)
    with pytest.raises(ValueError, match="stage3.2"):
        fineprune_repair(model, cx, cy, cfg=cfg, pruned={"stage2.2": saved})


def test_mask_zeroes_scale_and_shift_in_place_and_rejects_bad_masks(backdoored: Backdoored) -> None:
    model = copy.deepcopy(backdoored["model"])
    keep = torch.ones(64, dtype=torch.bool)
    keep[[0, 5]] = False
    assert apply_fineprune_mask(model, {"stage3.2": keep}) is model
    bn = model.stage3[2]
    assert torch.all(bn.weight[[0, 5]] == 0) and torch.all(bn.bias[[0, 5]] == 0) and bn.weight[1] != 0
    with pytest.raises(ValueError, match="not a BatchNorm2d"):
        apply_fineprune_mask(model, {"head.1": keep})
    with pytest.raises(ValueError, match="shape"):
        apply_fineprune_mask(model, {"stage3.2": keep[:3]})


@pytest.mark.parametrize(("field", "value"), [("max_drop", 0.0), ("max_drop", 101.0), ("max_fraction", 0.0),
                                              ("max_fraction", 1.0)])
def test_bad_config_is_refused(digits: tuple[torch.Tensor, torch.Tensor], field: str, value: float) -> None:
    x, y = digits
    with pytest.raises(ValueError, match=field):
        fineprune_repair(build_model("cnn", 1, 10), x[:20], y[:20], cfg=FinePruneConfig(**{field: value}))
