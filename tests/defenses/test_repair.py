"""RNP, NAD and fine-tuning on a small backdoored digits model."""

from __future__ import annotations

import copy
import os
import statistics

import pytest
import torch
from torch import nn

from bastionfl.defenses import (
    FinetuneConfig,
    NADConfig,
    RNPConfig,
    apply_rnp_mask,
    attention_distillation_loss,
    attention_map,
    finetune_repair,
    nad_repair,
    rnp_repair,
)
from bastionfl.defenses._common import accuracy
from bastionfl.defenses.rnp import bn_layer_names
from bastionfl.tasks.models import build_model

Backdoored = dict[str, object]


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.skipif(os.environ.get("BASTIONFL_TEST_NATIVE_ISA") == "1",
                    reason="RNP's effect on the 8x8 toy CNN depends on the floating-point kernels (docs/testing.md)")
def test_rnp_lowers_asr_and_keeps_accuracy(backdoored: Backdoored) -> None:
    model, (cx, cy) = backdoored["model"], backdoored["clean"]
    before = copy.deepcopy(model)
    # On this 8x8 toy model the backdoor shares channels with clean features, so pruning costs accuracy, and RNP's
    # outcome is chaotic in the model's last bits: on native AVX2 / AVX-512 kernels single seeds ended anywhere
    # between ASR 0.0 and 0.99 (also as a median over seeds). The test therefore runs on the pinned portable kernels
    # (tests/conftest.py), where every x86-64 CPU computes the same bits, and asserts the median over three seeds with
    # margin (there: ASR 1.0 -> 0.23, accuracy 0.99 -> 0.70). RNP on a model with batch-norm channels of the paper's
    # kind is measured in docs/results-image.md.
    cfg = RNPConfig(acc_tolerance=0.3, prune_by="number", holdout_fraction=0.0)
    runs = [rnp_repair(model, cx, cy, cfg=cfg, seed=s) for s in (0, 1, 2)]
    assert _same(model, before), "caller's model must not change"
    asr = statistics.median(accuracy(r, *backdoored["asr_set"]) for r, _, _ in runs)
    ca = statistics.median(accuracy(r, *backdoored["test"]) for r, _, _ in runs)
    assert asr <= backdoored["asr"] - 0.4, (asr, [rep for _, _, rep in runs])
    assert ca >= backdoored["ca"] - 0.35, (ca, [rep for _, _, rep in runs])
    repaired, mask, report = runs[0]
    assert report["pruned_channels"] == sum(int((~k).sum()) for k in mask.values()) > 0
    repaired2, mask2, _ = rnp_repair(model, cx, cy, cfg=cfg, seed=0)
    assert _same(repaired, repaired2) and all(torch.equal(mask[k], mask2[k]) for k in mask)


def _random_prune(model: nn.Module, count: int, seed: int) -> nn.Module:
    """A copy of ``model`` with ``count`` BN channels drawn at random zeroed (the control for RNP's ranking)."""
    mods = dict(model.named_modules())
    names = bn_layer_names(model)
    sizes = [mods[n].num_features for n in names]
    keep = torch.ones(sum(sizes), dtype=torch.bool)
    keep[torch.randperm(sum(sizes), generator=torch.Generator().manual_seed(seed))[:count]] = False
    return apply_rnp_mask(copy.deepcopy(model), dict(zip(names, keep.split(sizes))))


def test_rnp_lowest_masks_carry_the_backdoor_of_a_batchnorm_wrn(backdoored_wrn: Backdoored) -> None:
    """RNP's claim on the paper's model family: the channels it ranks lowest carry the backdoor.

    Pruning RNP's 50 lowest-mask channels (of 464; ``prune_by="number"``, no accuracy stop) must lower the ASR far
    more than pruning 50 channels drawn at random. Measured on this model (medians over three seeds): ASR 1.00 ->
    0.00 (native kernels) or 0.37 (pinned kernels) after RNP, about 0.9 after random pruning; asserted with margin.
    """
    model, (cx, cy) = backdoored_wrn["model"], backdoored_wrn["clean"]
    total = sum(dict(model.named_modules())[n].num_features for n in bn_layer_names(model))
    cfg = RNPConfig(batch_size=32, prune_by="number", max_pruned_fraction=50.5 / total, acc_tolerance=1.0)
    runs = [rnp_repair(model, cx, cy, cfg=cfg, seed=s) for s in (0, 1, 2)]
    assert all(report["pruned_channels"] == 50 and report["unlearn_reached_stop_acc"] for _, _, report in runs)
    asr = statistics.median(accuracy(r, *backdoored_wrn["asr_set"]) for r, _, _ in runs)
    ca = statistics.median(accuracy(r, *backdoored_wrn["test"]) for r, _, _ in runs)
    random_asr = statistics.median(accuracy(_random_prune(model, 50, s), *backdoored_wrn["asr_set"]) for s in range(5))
    assert asr <= backdoored_wrn["asr"] - 0.4, (asr, [rep["sweep"][-1] for _, _, rep in runs])
    assert asr <= random_asr - 0.3, (asr, random_asr)
    assert ca >= 0.5, ca


def test_mask_reapplication_keeps_pruned_channels_zero(backdoored: Backdoored) -> None:
    model = backdoored["model"]
    names = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    mask = {n: torch.ones(dict(model.named_modules())[n].num_features, dtype=torch.bool) for n in names}
    mask[names[0]][[0, 3]] = False
    mask[names[-1]][5] = False
    new_global = copy.deepcopy(model)  # a later round's aggregate: pruned scales came back non-zero
    out = apply_rnp_mask(new_global, mask)
    assert out is new_global
    mods = dict(out.named_modules())
    assert torch.all(mods[names[0]].weight[[0, 3]] == 0) and float(mods[names[-1]].weight[5].detach()) == 0
    assert torch.equal(mods[names[0]].weight[1], dict(model.named_modules())[names[0]].weight[1])
    with pytest.raises(ValueError):
        apply_rnp_mask(new_global, {"nope": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError):
        apply_rnp_mask(new_global, {names[0]: torch.ones(2, dtype=torch.bool)})


def test_rnp_rejects_model_without_batchnorm_and_empty_set(digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = digits
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(ValueError, match="BatchNorm"):
        rnp_repair(plain, x[:50], y[:50])
    with pytest.raises(ValueError, match="empty"):
        rnp_repair(build_model("cnn", 1, 10), x[:0], y[:0])


def test_attention_map_normalised_and_student_gets_gradient() -> None:
    torch.manual_seed(0)
    student, teacher = build_model("cnn", 1, 10), build_model("cnn", 1, 10)
    x = torch.rand(8, 1, 8, 8)
    _, s_feats = student.forward_features(x)
    _, t_feats = teacher.forward_features(x)
    am = attention_map(s_feats[0])
    assert am.shape == (8, 64) and torch.allclose(am.norm(dim=1), torch.ones(8), atol=1e-4)
    loss = attention_distillation_loss(s_feats, t_feats, (500.0, 1000.0, 1000.0))
    assert loss > 0
    loss.backward()
    grads = [p.grad for p in student.stage1.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads), "attention loss must not detach the student"
    assert all(p.grad is None for p in teacher.parameters()), "teacher maps must be detached"


def test_nad_lowers_asr_and_keeps_accuracy(backdoored: Backdoored) -> None:
    model, (cx, cy) = backdoored["model"], backdoored["clean"]
    before = copy.deepcopy(model)
    cfg = NADConfig(teacher=FinetuneConfig(epochs=5, lr=0.01, augment=False), epochs=5, lr=0.01, augment=False)
    repaired, report = nad_repair(model, cx, cy, cfg=cfg, seed=0)
    assert _same(model, before)
    assert accuracy(repaired, *backdoored["test"]) >= backdoored["ca"] - 0.05, report
    assert report["betas"] == [500.0, 1000.0, 1000.0]
    with pytest.raises(ValueError):
        nad_repair(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), cx, cy)


def test_finetune_runs_keeps_accuracy_and_is_deterministic(backdoored: Backdoored) -> None:
    model, (cx, cy) = backdoored["model"], backdoored["clean"]
    cfg = FinetuneConfig(epochs=5, lr=0.01, augment=False)
    a, report = finetune_repair(model, cx, cy, cfg=cfg, seed=3)
    b, _ = finetune_repair(model, cx, cy, cfg=cfg, seed=3)
    assert _same(a, b)
    assert accuracy(a, *backdoored["test"]) >= backdoored["ca"] - 0.05
    assert report["defense"] == "finetune" and report["clean_set_size"] == cx.shape[0]
    with pytest.raises(ValueError):
        finetune_repair(model, cx, cy.float())


def test_nad_with_its_default_recipe_keeps_accuracy_on_digits(backdoored: Backdoored) -> None:
    """NAD's official betas and lr on 8x8 inputs once drove the student to chance (the attention term scaled with
    1 / map size); with the size-normalised term the default recipe keeps the model."""
    model, (cx, cy) = backdoored["model"], backdoored["clean"]
    repaired, report = nad_repair(model, cx, cy, seed=0)
    assert accuracy(repaired, *backdoored["test"]) >= backdoored["ca"] - 0.1, report
    assert report["final_epoch_loss"] < 2.0, report
