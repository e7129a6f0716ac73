"""Plain fine-tuning on a small clean set: the baseline always reported beside RNP and NAD.

It is NAD with beta = 0 (the teacher recipe of Li et al., ICLR 2021, official ``bboylyg/NAD`` README), so a
defense is only credited with what it removes beyond fine-tuning on the same data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from bastionfl.defenses._common import accuracy, check_dataset, check_positive, clone_model, run_epoch, sgd

__all__ = ["FinetuneConfig", "finetune_repair"]


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning schedule: SGD (momentum 0.9, wd 1e-4), lr divided by 10 after ``lr_drop_epoch`` epochs."""

    epochs: int = 10
    lr: float = 0.1
    lr_drop_epoch: int = 5
    batch_size: int = 64
    augment: bool = True  # random crop (pad ~H/8) + horizontal flip of the clean images


def finetune_repair(
    model: nn.Module,
    clean_images: torch.Tensor,
    clean_labels: torch.Tensor,
    *,
    cfg: FinetuneConfig | None = None,
    seed: int = 0,
) -> tuple[nn.Module, dict[str, object]]:
    """Fine-tune a copy of ``model`` with CE on the clean set; returns (repaired copy, report).

    The caller's model is not modified; the result is deterministic given ``seed``.
    """
    cfg = cfg or FinetuneConfig()
    check_dataset(clean_images, clean_labels)
    check_positive(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size)
    student = clone_model(model)
    gen = torch.Generator().manual_seed(int(seed))
    acc_before = accuracy(student, clean_images, clean_labels)
    fit_epochs(student, clean_images, clean_labels, cfg, gen)
    report: dict[str, object] = {
        "defense": "finetune",
        "clean_set_size": int(clean_images.shape[0]),
        "clean_train_acc_before": acc_before,
        "clean_train_acc_after": accuracy(student, clean_images, clean_labels),
        **{f"cfg_{k}": v for k, v in asdict(cfg).items()},
    }
    return student, report


def fit_epochs(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: FinetuneConfig, gen: torch.Generator
) -> None:
    """Run ``cfg.epochs`` CE epochs in place (shared with NAD's teacher)."""
    opt = sgd(model.parameters(), cfg.lr)
    for epoch in range(cfg.epochs):
        if epoch == cfg.lr_drop_epoch:
            for group in opt.param_groups:
                group["lr"] = cfg.lr / 10
        run_epoch(model, images, labels, opt, gen, batch_size=cfg.batch_size, do_augment=cfg.augment)
