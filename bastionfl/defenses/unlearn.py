"""Adversarial backdoor unlearning with a universal perturbation, after I-BAU (Zeng et al., ICLR 2022, arXiv 2110.03735).

I-BAU solves ``min_theta max_{|delta| <= eps} L(theta; x + delta, y)`` over the defender's clean set: the inner
maximisation finds one perturbation ``delta`` shared by all images (a universal perturbation; a backdoor trigger is
such a perturbation, one that sends every input to the target class), the outer minimisation trains the model to
classify ``x + delta`` correctly, which unlearns the shortcut the trigger uses.

BastionFL change (first-order alternation): the paper differentiates through the inner maximisation with an implicit
hypergradient; here each of ``outer_rounds`` rounds (a) finds ``delta`` from zero by ``pgd_steps`` steps of projected
gradient ascent on the mean cross-entropy over the whole repair set (L2 or L-infinity ball of radius ``eps``, images
kept in [0, 1]), then (b) trains the model for ``epochs`` epochs on ``CE(x) + CE(x + delta)`` with ``delta`` fixed.
The clean term keeps clean accuracy where the perturbed term alone would trade it away. The model is trained
with Adam (lr 1e-3), as in the official code, because the first perturbed losses are large (CE 10-20).

BastionFL change (targeted search, the default): on 8x8 digits the untargeted maximisation found a natural universal
adversarial perturbation (every image to '8' at L2 2-3) instead of the trigger; a targeted search per class picks
the backdoor target in the first round there. An L1 ball (``norm`` l1) favours sparse, patch-like perturbations.
Measured on the digits repair test (tests/defenses/test_unlearn.py) and the image grid (docs/results-image.md),
this repair did not remove a BadNets backdoor at an acceptable clean-accuracy cost: see those pages.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bastionfl.defenses._common import accuracy, batches, check_dataset, check_positive, clone_model

__all__ = ["UnlearnConfig", "universal_perturbation", "find_perturbation", "unlearn_repair", "NORMS", "SEARCHES"]

NORMS = ("l1", "l2", "linf")
SEARCHES = ("targeted", "untargeted")


@dataclass(frozen=True)
class UnlearnConfig:
    """Unlearning schedule: rounds of (PGD for one universal ``delta``, then SGD epochs on clean + perturbed images).

    ``eps`` is the perturbation bound in pixel units of [0, 1] images (L2 2.0: about the norm of the 3x3 BadNets
    checker on a dark corner). ``search`` targeted: each round tries every class as the target of the universal
    perturbation and keeps the most reachable one (BastionFL change, module doc).
    """

    outer_rounds: int = 5
    pgd_steps: int = 10
    eps: float = 2.0
    norm: str = "l2"
    search: str = "targeted"
    epochs: int = 1
    lr: float = 0.001  # Adam
    batch_size: int = 64


def _project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """``delta`` clipped into the ``norm`` ball of radius ``eps``."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    if norm == "l1":
        flat = delta.flatten()
        if float(flat.abs().sum()) <= eps:
            return delta
        mags = flat.abs().sort(descending=True).values  # Duchi et al. 2008: soft threshold onto the simplex
        cums = mags.cumsum(0)
        ks = torch.arange(1, mags.numel() + 1, dtype=mags.dtype)
        rho = int((mags - (cums - eps) / ks > 0).nonzero().max())
        theta = (cums[rho] - eps) / (rho + 1)
        return (flat.sign() * (flat.abs() - theta).clamp(min=0)).view_as(delta)
    n = float(delta.norm())
    return delta * (eps / n) if n > eps else delta


def _mean_loss_grad(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, delta: torch.Tensor,
                    batch_size: int) -> tuple[float, torch.Tensor]:
    """Mean CE over the set at ``x + delta`` (clamped to [0, 1]) and its gradient with respect to ``delta``."""
    grad = torch.zeros_like(delta)
    total = 0.0
    for idx in batches(images.shape[0], max(batch_size, 256), None):
        d = delta.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(model((images[idx] + d).clamp(0.0, 1.0)), labels[idx], reduction="sum")
        (g,) = torch.autograd.grad(loss, d)
        grad += g
        total += float(loss.detach())
    n = images.shape[0]
    return total / n, grad / n


def universal_perturbation(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, eps: float,
                           steps: int, norm: str = "l2", target: int | None = None,
                           batch_size: int = 256) -> tuple[torch.Tensor, float]:
    """One (C, H, W) perturbation in the ``norm`` ball of radius ``eps`` found by PGD from zero (step 2.5 eps /
    steps, model in eval mode): untargeted (``target`` None) it maximises the mean CE of the true labels, targeted
    it minimises the mean CE of ``target`` over the images of other classes; returns (delta, that CE at delta)."""
    if norm not in NORMS:
        raise ValueError(f"unknown perturbation norm {norm!r}; expected one of {', '.join(NORMS)}")
    check_positive(eps=eps, steps=steps)
    sign = 1.0
    if target is not None:
        keep = labels != int(target)
        images, labels, sign = images[keep], torch.full_like(labels[keep], int(target)), -1.0
        if images.shape[0] == 0:
            return torch.zeros(images.shape[1:], dtype=images.dtype), 0.0
    was_training = model.training
    model.eval()
    flags = [prm.requires_grad for prm in model.parameters()]
    for prm in model.parameters():
        prm.requires_grad_(False)
    step = 2.5 * eps / steps
    delta = torch.zeros(images.shape[1:], dtype=images.dtype)
    try:
        for _ in range(steps):
            _, g = _mean_loss_grad(model, images, labels, delta, batch_size)
            g = sign * g
            delta = delta + (step * g.sign() if norm == "linf" else step * g / (g.norm() + 1e-12))
            delta = _project(delta, eps, norm)
        loss, _ = _mean_loss_grad(model, images, labels, delta, batch_size)
    finally:
        for prm, flag in zip(model.parameters(), flags):
            prm.requires_grad_(flag)
        model.train(was_training)
    return delta.detach(), loss


def find_perturbation(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: "UnlearnConfig",
                      num_classes: int) -> tuple[torch.Tensor, float, int | None]:
    """The round's perturbation: untargeted, or (``cfg.search`` targeted) the class whose targeted universal
    perturbation reaches the lowest CE, i.e. the class the model is most easily pushed to; (delta, CE, class)."""
    if cfg.search == "untargeted":
        delta, loss = universal_perturbation(model, images, labels, eps=cfg.eps, steps=cfg.pgd_steps, norm=cfg.norm,
                                             batch_size=cfg.batch_size)
        return delta, loss, None
    best: tuple[torch.Tensor, float, int | None] | None = None
    for k in range(num_classes):
        delta, loss = universal_perturbation(model, images, labels, eps=cfg.eps, steps=cfg.pgd_steps, norm=cfg.norm,
                                             target=k, batch_size=cfg.batch_size)
        if best is None or loss < best[1]:
            best = (delta, loss, k)
    assert best is not None
    return best


def _train_epoch(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, delta: torch.Tensor,
                 opt: torch.optim.Optimizer, gen: torch.Generator, batch_size: int) -> None:
    """One shuffled epoch in train mode on ``CE(x) + CE(x + delta)`` (clean and perturbed batches apart, so the
    batch-norm statistics of each stay their own)."""
    model.train()
    for idx in batches(images.shape[0], batch_size, gen):
        x, y = images[idx], labels[idx]
        loss = F.cross_entropy(model(x), y) + F.cross_entropy(model((x + delta).clamp(0.0, 1.0)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()


def unlearn_repair(
    model: nn.Module,
    clean_images: torch.Tensor,
    clean_labels: torch.Tensor,
    *,
    cfg: UnlearnConfig | None = None,
    seed: int = 0,
) -> tuple[nn.Module, dict[str, object]]:
    """Unlearn the backdoor of a copy of ``model`` by adversarial training on universal perturbations; returns
    (repaired copy, report). The caller's model is not modified; the result is deterministic given ``seed``."""
    cfg = cfg or UnlearnConfig()
    check_dataset(clean_images, clean_labels)
    check_positive(outer_rounds=cfg.outer_rounds, pgd_steps=cfg.pgd_steps, eps=cfg.eps, epochs=cfg.epochs,
                   lr=cfg.lr, batch_size=cfg.batch_size)
    if cfg.norm not in NORMS:
        raise ValueError(f"unknown perturbation norm {cfg.norm!r}; expected one of {', '.join(NORMS)}")
    if cfg.search not in SEARCHES:
        raise ValueError(f"unknown perturbation search {cfg.search!r}; expected one of {', '.join(SEARCHES)}")
    student = clone_model(model)
    gen = torch.Generator().manual_seed(int(seed))
    acc_before = accuracy(student, clean_images, clean_labels)
    opt = torch.optim.Adam(student.parameters(), lr=cfg.lr)
    losses: list[float] = []
    classes: list[int | None] = []
    with torch.no_grad():
        num_classes = int(student.eval()(clean_images[:1]).shape[1])
    delta = torch.zeros(clean_images.shape[1:], dtype=clean_images.dtype)

    for _ in range(cfg.outer_rounds):
        delta, loss, k = find_perturbation(student, clean_images, clean_labels, cfg, num_classes)
        losses.append(loss)
        classes.append(k)
        for _ in range(cfg.epochs):
            _train_epoch(student, clean_images, clean_labels, delta, opt, gen, cfg.batch_size)
    report: dict[str, object] = {
        "defense": "unlearn",
        "clean_set_size": int(clean_images.shape[0]),
        "clean_train_acc_before": acc_before,
        "clean_train_acc_after": accuracy(student, clean_images, clean_labels),
        "perturbation_loss_per_round": losses,
        "perturbation_class_per_round": classes,
        "perturbed_acc_after": accuracy(student, (clean_images + delta).clamp(0.0, 1.0), clean_labels),
        **{f"cfg_{k}": v for k, v in asdict(cfg).items()},
    }
    return student, report
