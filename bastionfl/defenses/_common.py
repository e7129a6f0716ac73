"""Private helpers shared by the image defenses: input checks, seeded batching, augmentation, SGD epochs."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def check_dataset(images: torch.Tensor, labels: torch.Tensor, what: str = "clean set") -> None:
    """Raise ValueError unless ``images`` is a non-empty float (N, C, H, W) tensor with N int64 labels."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"{what}: images must be a float tensor of shape (N, C, H, W)")
    if images.shape[0] == 0:
        raise ValueError(f"{what} is empty")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"{what}: labels must be a 1-D tensor with one label per image")
    if labels.dtype != torch.long:
        raise ValueError(f"{what}: labels must be int64, got {labels.dtype}")


def check_positive(**values: float) -> None:
    """Raise ValueError naming the first argument that is not > 0."""
    for name, v in values.items():
        if not v > 0:
            raise ValueError(f"{name} must be > 0, got {v}")


def clone_model(model: nn.Module) -> nn.Module:
    """Independent deep copy (the caller's model is never modified by the repair functions)."""
    return copy.deepcopy(model)


def batches(n: int, batch_size: int, gen: torch.Generator | None) -> Iterator[torch.Tensor]:
    """Index batches over ``n`` items, shuffled by ``gen`` (in order when ``gen`` is None)."""
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def augment(x: torch.Tensor, gen: torch.Generator, flip: bool | None = None) -> torch.Tensor:
    """Random crop with zero padding of about H/8 pixels plus a random horizontal flip.

    ``flip`` None: flip colour images only; a mirrored digit or letter is another glyph (on 8x8 digits the flipped
    fine-tuning teacher fell to half its accuracy), so single-channel images are cropped, not flipped. Images
    smaller than 16x16 are returned as they are: a one-pixel shift of an 8x8 digit alone kept NAD's teacher at half
    its accuracy.
    """
    n, c, h, w = x.shape
    if h < 16 or w < 16:
        return x
    if flip is None:
        flip = c == 3
    pad = max(1, round(h / 8))
    padded = F.pad(x, (pad, pad, pad, pad))
    offs = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen)
    out = torch.empty_like(x)
    for i in range(n):
        dy, dx = int(offs[i, 0]), int(offs[i, 1])
        out[i] = padded[i, :, dy : dy + h, dx : dx + w]
    if flip:
        mirror = torch.rand(n, generator=gen) < 0.5
        out[mirror] = out[mirror].flip(-1)
    return out


def ce_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the model on one batch."""
    return F.cross_entropy(model(x), y)


def sgd(params: object, lr: float, momentum: float = 0.9, weight_decay: float = 1e-4) -> torch.optim.SGD:
    """SGD with momentum, the optimiser of all four official code bases."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)  # type: ignore[arg-type]


def run_epoch(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    *,
    batch_size: int,
    loss_fn: LossFn = ce_loss,
    sign: float = 1.0,
    do_augment: bool = False,
) -> float:
    """One shuffled epoch in train mode minimising ``sign * loss_fn`` (sign -1 = gradient ascent); mean loss."""
    model.train()
    total, count = 0.0, 0
    for idx in batches(images.shape[0], batch_size, gen):
        x, y = images[idx], labels[idx]
        if do_augment:
            x = augment(x, gen)
        loss = loss_fn(model, x, y)
        opt.zero_grad(set_to_none=True)
        (sign * loss).backward()
        opt.step()
        total += float(loss.detach()) * len(idx)
        count += len(idx)
    return total / max(count, 1)


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy in eval mode (0.0 on an empty set); restores the model's train/eval mode."""
    if images.shape[0] == 0:
        return 0.0
    was_training = model.training
    model.eval()
    correct = 0
    for idx in batches(images.shape[0], batch_size, None):
        correct += int((model(images[idx]).argmax(1) == labels[idx]).sum())
    model.train(was_training)
    return correct / images.shape[0]


@torch.no_grad()
def per_example_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Per-example cross-entropy in eval mode, batched (``reduction='none'``), as a 1-D CPU tensor."""
    was_training = model.training
    model.eval()
    out = []
    for idx in batches(images.shape[0], batch_size, None):
        out.append(F.cross_entropy(model(images[idx]), labels[idx], reduction="none"))
    model.train(was_training)
    return torch.cat(out).cpu()


def has_batchnorm(model: nn.Module) -> bool:
    """True when the model holds at least one BatchNorm2d with learnable scale."""
    return any(isinstance(m, nn.BatchNorm2d) and m.weight is not None for m in model.modules())
