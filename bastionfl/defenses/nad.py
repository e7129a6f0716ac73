"""NAD — Neural Attention Distillation (Li et al., ICLR 2021, arXiv 2101.05930) as server-side repair.

Teacher: a copy of the backdoored model fine-tuned on the clean set (the official README recipe, beta = 0).
Student: the backdoored model trained with ``CE + sum_k beta_k * AT(student_k, teacher_k)`` over the three stage
outputs of ``model.forward_features``. ``AT`` follows the official ``at.py`` after the 2022-01 fix (commit
``6907ea2``): attention map = channel mean of ``|a|^p`` (p = 2), flattened and L2-normalised (eps 1e-6), loss = MSE
between maps; the teacher's maps are detached, the student's are not.

BastionFL change (input size): the official betas were set for CIFAR-10's WRN stages of 32x32, 16x16 and 8x8. An MSE
over a map of d positions between two unit vectors is up to 2 / d, so on 8x8 digits (stages 8x8, 4x4, 2x2) the
same betas weigh the attention term 16 times more, which made the student diverge (clean accuracy at chance). Each
stage's squared distance is therefore divided by the official map size (``REFERENCE_MAP_SIZES``) instead of its own:
identical to the official loss on 32x32 inputs, and of the same scale on any other input size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from bastionfl.defenses._common import accuracy, check_dataset, check_positive, clone_model, run_epoch, sgd
from bastionfl.defenses.finetune import FinetuneConfig, fit_epochs

__all__ = ["NADConfig", "attention_map", "attention_distillation_loss", "nad_repair", "REFERENCE_MAP_SIZES"]

REFERENCE_MAP_SIZES = (32 * 32, 16 * 16, 8 * 8)  # positions of the official WRN-16-1 stages on 32x32 CIFAR-10


@dataclass(frozen=True)
class NADConfig:
    """NAD defaults: official p = 2, beta = (500, 1000, 1000), batch 64, SGD lr 0.1 dropped 10x after 2 epochs.

    10 distillation epochs instead of the official 20 (the effect settles within 10 on Fashion-MNIST, see
    docs/defenses.md); the teacher is the fine-tuning baseline's default recipe.
    """

    teacher: FinetuneConfig = field(default_factory=FinetuneConfig)
    epochs: int = 10
    lr: float = 0.1
    lr_drop_epoch: int = 2
    batch_size: int = 64
    betas: tuple[float, float, float] = (500.0, 1000.0, 1000.0)
    p: float = 2.0
    augment: bool = True


def attention_map(features: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Spatial attention of a (N, C, H, W) activation: channel mean of |a|^p, flattened, L2-normalised."""
    if features.dim() != 4:
        raise ValueError(f"attention_map expects (N, C, H, W) activations, got shape {tuple(features.shape)}")
    am = features.abs().pow(p).mean(dim=1).flatten(1)
    return am / (am.norm(dim=1, keepdim=True) + 1e-6)


def attention_distillation_loss(
    student_features: Sequence[torch.Tensor],
    teacher_features: Sequence[torch.Tensor],
    betas: Sequence[float],
    p: float = 2.0,
) -> torch.Tensor:
    """``sum_k beta_k * |A(student_k) - A(teacher_k)|^2 / ref_k`` (batch mean), gradients through the student only.

    ``ref_k`` is the official stage map size (``REFERENCE_MAP_SIZES``; module doc): the official MSE on 32x32 inputs,
    the same scale on smaller ones.
    """
    if not (len(student_features) == len(teacher_features) == len(betas)):
        raise ValueError("student features, teacher features and betas must have the same length")
    total = student_features[0].new_zeros(())
    for k, (s, t, beta) in enumerate(zip(student_features, teacher_features, betas)):
        if s.shape[0] != t.shape[0] or s.shape[2:] != t.shape[2:]:
            raise ValueError(f"stage shapes differ: student {tuple(s.shape)} vs teacher {tuple(t.shape)}")
        ref = REFERENCE_MAP_SIZES[min(k, len(REFERENCE_MAP_SIZES) - 1)]
        diff = attention_map(s, p) - attention_map(t, p).detach()
        total = total + float(beta) * diff.pow(2).sum(dim=1).mean() / ref
    return total


def nad_repair(
    model: nn.Module,
    clean_images: torch.Tensor,
    clean_labels: torch.Tensor,
    *,
    cfg: NADConfig | None = None,
    seed: int = 0,
) -> tuple[nn.Module, dict[str, object]]:
    """Repair a copy of ``model`` by attention distillation from a fine-tuned teacher; returns (student, report).

    ``model`` must provide ``forward_features(x) -> (logits, [stage1, stage2, stage3])``. The caller's model
    is not modified; the result is deterministic given ``seed``.
    """
    cfg = cfg or NADConfig()
    check_dataset(clean_images, clean_labels)
    check_positive(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, p=cfg.p)
    if not callable(getattr(model, "forward_features", None)):
        raise ValueError("NAD needs a model with forward_features(x) -> (logits, stage outputs)")
    gen = torch.Generator().manual_seed(int(seed))

    teacher = clone_model(model)
    fit_epochs(teacher, clean_images, clean_labels, cfg.teacher, gen)
    teacher.eval()
    for prm in teacher.parameters():
        prm.requires_grad_(False)

    def loss_fn(student: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits, s_feats = student.forward_features(x)  # type: ignore[operator]
        with torch.no_grad():
            _, t_feats = teacher.forward_features(x)  # type: ignore[operator]
        if len(s_feats) != len(cfg.betas):
            raise ValueError(f"model returns {len(s_feats)} stage outputs, NAD has {len(cfg.betas)} betas")
        return F.cross_entropy(logits, y) + attention_distillation_loss(s_feats, t_feats, cfg.betas, cfg.p)

    student = clone_model(model)
    acc_before = accuracy(student, clean_images, clean_labels)
    opt = sgd(student.parameters(), cfg.lr)
    last_loss = float("nan")
    for epoch in range(cfg.epochs):
        if epoch == cfg.lr_drop_epoch:
            for group in opt.param_groups:
                group["lr"] = cfg.lr / 10
        last_loss = run_epoch(
            student, clean_images, clean_labels, opt, gen, batch_size=cfg.batch_size, loss_fn=loss_fn,
            do_augment=cfg.augment,
        )
    report: dict[str, object] = {
        "defense": "nad",
        "clean_set_size": int(clean_images.shape[0]),
        "clean_train_acc_before": acc_before,
        "teacher_clean_train_acc": accuracy(teacher, clean_images, clean_labels),
        "clean_train_acc_after": accuracy(student, clean_images, clean_labels),
        "final_epoch_loss": last_loss,
        "betas": list(cfg.betas),
        "p": cfg.p,
        "epochs": cfg.epochs,
        "lr": cfg.lr,
        "teacher": asdict(cfg.teacher),
    }
    return student, report
