"""RNP — Reconstructive Neuron Pruning (Li et al., ICML 2023, arXiv 2305.14876) as server-side repair.

Follows the official ``bboylyg/RNP`` ``main.py``: (1) unlearn a copy by gradient ascent on the clean set (SGD lr
0.01, momentum 0.9, wd 5e-4, lr / 10 at epochs 10 and 20) until its clean train accuracy is <= 0.2 or an epoch cap
(then the last epoch is used and the report says so); (2) on the unlearned copy, learn one mask in [0, 1] per
BatchNorm2d channel that multiplies the BN scale gamma only (``MaskBatchNorm2d``), minimising ``alpha * CE`` on the
clean set (SGD lr 0.2, momentum 0.9, 20 epochs, clamped after every step); (3) zero gamma of the ORIGINAL model's
channels with mask <= t (beta kept), or of the k lowest-mask channels (official ``pruning_by='number'``). The
official code only logs a sweep; here the sweep stops at the first point whose clean accuracy on a held-out split of
the clean set falls more than ``acc_tolerance`` below the unpruned model, and the last point before it is used (the
defender does not know the trigger). In "number" mode the report's threshold is the mask value of the last pruned
channel (-1.0 when none).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from bastionfl.defenses._common import (
    accuracy,
    batches,
    check_dataset,
    check_positive,
    clone_model,
    has_batchnorm,
    run_epoch,
    sgd,
)

__all__ = ["RNPConfig", "rnp_repair", "apply_rnp_mask", "bn_layer_names"]

RNPMask = dict[str, torch.Tensor]


@dataclass(frozen=True)
class RNPConfig:
    """RNP defaults from the official code; ``thresholds`` = 0 : 0.05 : ``max_threshold``."""

    unlearn_lr: float = 0.01
    unlearn_max_epochs: int = 20
    unlearn_stop_acc: float = 0.2
    recover_lr: float = 0.2
    recover_epochs: int = 20
    alpha: float = 0.2
    batch_size: int = 128
    threshold_step: float = 0.05
    max_threshold: float = 0.9
    prune_by: str = "threshold"  # "threshold" (mask <= t, official default) or "number" (k lowest masks, k = 0, 1, ...)
    max_pruned_fraction: float = 0.2  # "number" mode: largest share of BN channels tried
    acc_tolerance: float = 0.02  # allowed clean-accuracy drop (absolute, as a fraction) on the held-out split
    holdout_fraction: float = 0.2  # share of the clean set kept for choosing t (0 = choose on the whole set)


def bn_layer_names(model: nn.Module) -> list[str]:
    """Names of the BatchNorm2d layers with a learnable scale (the channels RNP masks and prunes)."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) and m.weight is not None]


def apply_rnp_mask(model: nn.Module, mask: RNPMask) -> nn.Module:
    """Zero, IN PLACE, the BN scale of every channel whose keep flag is False; returns ``model``.

    Call it on each new global model after aggregation so channels pruned once stay pruned.
    """
    modules = dict(model.named_modules())
    for name, keep in mask.items():
        bn = modules.get(name)
        if not isinstance(bn, nn.BatchNorm2d) or bn.weight is None:
            raise ValueError(f"mask names {name!r}, which is not a BatchNorm2d layer with a scale in this model")
        keep = torch.as_tensor(keep, dtype=torch.bool)
        if keep.shape != bn.weight.shape:
            raise ValueError(f"mask for {name!r} has shape {tuple(keep.shape)}, layer has {tuple(bn.weight.shape)}")
        with torch.no_grad():
            bn.weight[~keep.to(bn.weight.device)] = 0.0
    return model


def _unlearn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: RNPConfig, gen: torch.Generator) -> tuple[int, float, bool]:
    """Gradient ascent in place until clean train acc <= stop value; (epochs run, final acc, stopped early)."""
    opt = sgd(model.parameters(), cfg.unlearn_lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[10, 20], gamma=0.1)
    acc = accuracy(model, x, y)
    for epoch in range(cfg.unlearn_max_epochs):
        run_epoch(model, x, y, opt, gen, batch_size=cfg.batch_size, sign=-1.0)
        sched.step()
        acc = accuracy(model, x, y)
        if acc <= cfg.unlearn_stop_acc:
            return epoch + 1, acc, True
    return cfg.unlearn_max_epochs, acc, False


def _recover_masks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: RNPConfig, gen: torch.Generator) -> RNPMask:
    """Learn per-channel BN-scale masks on the frozen unlearned model; returns float masks in [0, 1]."""
    names = bn_layer_names(model)
    modules = dict(model.named_modules())
    masks = {n: torch.ones_like(modules[n].weight, requires_grad=True) for n in names}
    for prm in model.parameters():
        prm.requires_grad_(False)
    opt = torch.optim.SGD(list(masks.values()), lr=cfg.recover_lr, momentum=0.9)
    model.train()  # as in the official code: BN in train mode while recovering (stats of this copy are discarded)
    for _ in range(cfg.recover_epochs):
        for idx in batches(x.shape[0], cfg.batch_size, gen):
            override = {f"{n}.weight": modules[n].weight * masks[n] for n in names}
            logits = functional_call(model, override, (x[idx],))
            loss = cfg.alpha * F.cross_entropy(logits, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                for m in masks.values():
                    m.clamp_(0.0, 1.0)
    return {n: m.detach().clone() for n, m in masks.items()}


def _split(n: int, fraction: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(n, generator=gen)
    k = int(round(fraction * n))
    if fraction > 0 and (k < 1 or n - k < 1):
        raise ValueError(f"clean set of {n} images is too small for holdout_fraction={fraction}")
    return order[k:], order[:k]


def _candidates(soft: RNPMask, cfg: RNPConfig) -> list[tuple[float, RNPMask]]:
    """Keep-masks in increasing pruning order: by threshold t (mask <= t pruned) or by count of lowest masks."""
    if cfg.prune_by == "threshold":
        steps = int(round(cfg.max_threshold / cfg.threshold_step))
        ts = [round(i * cfg.threshold_step, 6) for i in range(steps + 1)]
        return [(t, {n: m > t for n, m in soft.items()}) for t in ts]
    flat = torch.cat([m.flatten() for m in soft.values()])
    order = torch.argsort(flat, stable=True)
    out = []
    for k in range(int(cfg.max_pruned_fraction * flat.numel()) + 1):
        keep = torch.ones_like(flat, dtype=torch.bool)
        keep[order[:k]] = False
        parts, i = {}, 0
        for n, m in soft.items():
            parts[n] = keep[i : i + m.numel()].view_as(m)
            i += m.numel()
        out.append((float(flat[order[k - 1]]) if k else -1.0, parts))
    return out


def rnp_repair(
    model: nn.Module,
    clean_images: torch.Tensor,
    clean_labels: torch.Tensor,
    *,
    cfg: RNPConfig | None = None,
    seed: int = 0,
    holdout: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[nn.Module, RNPMask, dict[str, object]]:
    """Unlearn, recover BN masks, prune a copy of ``model``; returns (pruned copy, keep mask, report).

    ``holdout``: the images on which the pruning sweep checks clean accuracy (the server's validation part); without
    it ``holdout_fraction`` of the clean set is split off for that. The check sees drops down to one held-out image,
    so it needs about ``1 / acc_tolerance`` images to resolve the tolerance (the report's ``holdout_resolution``).

    The keep mask maps each BN layer name to a bool tensor (False = pruned); re-apply it with
    ``apply_rnp_mask``. The caller's model is not modified; the result is deterministic given ``seed``.
    """
    cfg = cfg or RNPConfig()
    check_dataset(clean_images, clean_labels)
    check_positive(unlearn_lr=cfg.unlearn_lr, recover_lr=cfg.recover_lr, batch_size=cfg.batch_size,
                   threshold_step=cfg.threshold_step)
    if not 0.0 <= cfg.holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in [0, 1), got {cfg.holdout_fraction}")
    if cfg.prune_by not in ("threshold", "number"):
        raise ValueError(f"prune_by must be 'threshold' or 'number', got {cfg.prune_by!r}")
    if not has_batchnorm(model):
        raise ValueError("RNP needs a model with BatchNorm2d layers (it masks and prunes BN channels)")
    gen = torch.Generator().manual_seed(int(seed))
    if holdout is not None:
        check_dataset(*holdout, what="RNP held-out set")
        x_fit, y_fit = clean_images, clean_labels
        x_val, y_val = holdout
    else:
        fit_idx, val_idx = _split(clean_images.shape[0], cfg.holdout_fraction, gen)
        x_fit, y_fit = clean_images[fit_idx], clean_labels[fit_idx]
        x_val, y_val = (clean_images[val_idx], clean_labels[val_idx]) if len(val_idx) else (x_fit, y_fit)

    unlearned = clone_model(model)
    ul_epochs, ul_acc, ul_reached = _unlearn(unlearned, x_fit, y_fit, cfg, gen)
    soft = _recover_masks(unlearned, x_fit, y_fit, cfg, gen)

    base_acc = accuracy(model, x_val, y_val)
    sweep: list[dict[str, float]] = []
    chosen_t: float | None = None
    chosen_keep: RNPMask | None = None
    for t, keep in _candidates(soft, cfg):
        acc = accuracy(apply_rnp_mask(clone_model(model), keep), x_val, y_val)
        pruned = int(sum(int((~k).sum()) for k in keep.values()))
        sweep.append({"threshold": t, "pruned": pruned, "clean_acc": acc})
        if acc < base_acc - cfg.acc_tolerance:
            break
        chosen_t, chosen_keep = t, keep
    if chosen_keep is None:  # even t = 0 breaks the tolerance: prune nothing (threshold reported as None)
        chosen_keep = {n: torch.ones_like(m, dtype=torch.bool) for n, m in soft.items()}
    repaired = apply_rnp_mask(clone_model(model), chosen_keep)
    total = int(sum(m.numel() for m in soft.values()))
    report: dict[str, object] = {
        "defense": "rnp",
        "clean_set_size": int(clean_images.shape[0]),
        "holdout_size": int(x_val.shape[0]),
        "holdout_resolution": 1.0 / max(1, int(x_val.shape[0])),
        "unlearn_epochs": ul_epochs,
        "unlearn_final_acc": ul_acc,
        "unlearn_reached_stop_acc": ul_reached,
        "bn_channels": total,
        "threshold": chosen_t,
        "pruned_channels": int(sum(int((~k).sum()) for k in chosen_keep.values())),
        "pruned_nothing": not any(bool((~k).any()) for k in chosen_keep.values()),
        "clean_acc_before": base_acc,
        "clean_acc_after": accuracy(repaired, x_val, y_val),
        "sweep": sweep,
        **{f"cfg_{k}": v for k, v in asdict(cfg).items()},
    }
    return repaired, chosen_keep, report
