"""Adversarial (universal-perturbation) unlearning on the small backdoored digits model."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from bastionfl.defenses.unlearn import (UnlearnConfig, _project, find_perturbation, universal_perturbation,
                                        unlearn_repair)

Backdoored = dict[str, object]


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("norm", ["l1", "l2", "linf"])
def test_projection_respects_the_bound(norm: str) -> None:
    delta = torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(0)) * 3
    out = _project(delta, 1.5, norm)
    size = {"l1": out.abs().sum(), "l2": out.norm(), "linf": out.abs().max()}[norm]
    assert float(size) <= 1.5 + 1e-4
    assert torch.equal(_project(out * 0.1, 1.5, norm), out * 0.1)  # inside the ball: unchanged


def test_universal_perturbation_raises_the_loss_within_its_bound(backdoored: Backdoored) -> None:
    model, (cx, cy) = backdoored["model"], backdoored["clean"]
    before = copy.deepcopy(model)
    delta, loss = universal_perturbation(model, cx, cy, eps=1.0, steps=10)
    assert float(delta.norm()) <= 1.0 + 1e-4
    clean_loss = float(torch.nn.functional.cross_entropy(model.eval()(cx).detach(), cy))
    assert loss > clean_loss + 0.5
    assert _same(model, before) and all(p.requires_grad for p in model.parameters())


def test_targeted_search_returns_a_class_and_reaches_it(backdoored: Backdoored) -> None:
    model, (cx, cy) = backdoored["model"], backdoored["clean"]
    delta, loss, k = find_perturbation(model, cx, cy, UnlearnConfig(eps=2.0), num_classes=10)
    assert k is not None and 0 <= k < 10 and float(delta.norm()) <= 2.0 + 1e-4
    hit = (model.eval()((cx[cy != k] + delta).clamp(0, 1)).argmax(1) == k).float().mean()
    assert float(hit) > 0.5 and loss < 1.0


def test_unlearn_repair_is_deterministic_and_leaves_caller_model(backdoored: Backdoored) -> None:
    model, clean, test = backdoored["model"], backdoored["clean"], backdoored["test"]
    before = copy.deepcopy(model)
    cfg = UnlearnConfig(outer_rounds=2)
    a, report = unlearn_repair(model, *clean, cfg=cfg, seed=3)
    b, _ = unlearn_repair(model, *clean, cfg=cfg, seed=3)
    assert _same(model, before) and _same(a, b) and not _same(a, model)
    assert report["defense"] == "unlearn" and len(report["perturbation_class_per_round"]) == 2


def test_unlearn_rejects_bad_settings(backdoored: Backdoored) -> None:
    model, clean = backdoored["model"], backdoored["clean"]
    with pytest.raises(ValueError, match="norm"):
        unlearn_repair(model, *clean, cfg=UnlearnConfig(norm="l3"))
    with pytest.raises(ValueError, match="search"):
        unlearn_repair(model, *clean, cfg=UnlearnConfig(search="random"))
    with pytest.raises(ValueError, match="eps"):
        unlearn_repair(model, *clean, cfg=UnlearnConfig(eps=0.0))
