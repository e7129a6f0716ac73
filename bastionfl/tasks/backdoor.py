"""Image backdoor triggers and data poisoning (BadNets grid trigger, Blended), all-to-one; ASR test sets.

Trigger definitions live with the task (clients poison, the server measures ASR with the same trigger); the
simulated attackers that use them are configured in the run configuration (attack, poisoned_clients, threat).

Images are float tensors in [0, 1] of shape (N, C, H, W). A trigger is a per-pixel blend
``x' = (1 - a) * x + a * p`` with an alpha map ``a`` and a pattern ``p``:

* BadNets (Gu et al. 2017) follows the ``gridTrigger`` of the ABL/NAD/RNP code family: a fixed 3x3
  black/white pattern in the bottom-right corner, written into every channel (``a`` = 1 there, 0 elsewhere).
* Blended (Chen et al. 2017) blends the whole image with one fixed uniform-noise pattern drawn from a seed
  (``a`` = alpha everywhere, default 0.2), as in BackdoorBench's fixed-image Blended rather than ABL's
  fresh-noise-per-image variant.

Poisoning is all-to-one: a seeded random share of *all* training images (target-class images included, as in
the official ``all2one`` mode) gets the trigger and the target label.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "ATTACKS",
    "Trigger",
    "make_trigger",
    "badnets_trigger",
    "blended_trigger",
    "poison_dataset",
    "build_asr_set",
]

ATTACKS = ("badnets", "blended")

# 3x3 grid of the official gridTrigger (rows top to bottom, 1 = white), placed at the bottom-right corner.
_GRID = ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0), (1.0, 0.0, 1.0))


@dataclass(frozen=True)
class Trigger:
    """A blend trigger for images of shape ``(C, H, W)``: ``x' = (1 - alpha_map) * x + alpha_map * pattern``."""

    name: str
    pattern: torch.Tensor  # (C, H, W) in [0, 1]
    alpha_map: torch.Tensor  # (C, H, W) in [0, 1]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.pattern.shape
        return int(c), int(h), int(w)

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """Return triggered copies of ``images`` (N, C, H, W); the input is not modified."""
        _check_images(images, self.image_shape)
        a = self.alpha_map.to(images.dtype)
        out = (1.0 - a) * images + a * self.pattern.to(images.dtype)
        return out.clamp_(0.0, 1.0)


def _check_images(images: torch.Tensor, shape: tuple[int, int, int] | None = None) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise ValueError("images must be a float tensor of shape (N, C, H, W)")
    if shape is not None and tuple(images.shape[1:]) != shape:
        raise ValueError(f"images have shape (C, H, W) = {tuple(images.shape[1:])}, trigger expects {shape}")


def _check_shape(image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise ValueError(f"image_shape must be (C, H, W) with positive sizes, got {image_shape!r}")
    return int(image_shape[0]), int(image_shape[1]), int(image_shape[2])


def badnets_trigger(image_shape: tuple[int, int, int]) -> Trigger:
    """BadNets grid trigger: the 3x3 pattern in the bottom-right corner of every channel (H, W >= 3)."""
    c, h, w = _check_shape(image_shape)
    if h < 3 or w < 3:
        raise ValueError(f"BadNets grid trigger needs images of at least 3x3, got {h}x{w}")
    pattern = torch.zeros(c, h, w)
    alpha = torch.zeros(c, h, w)
    pattern[:, h - 3 :, w - 3 :] = torch.tensor(_GRID)
    alpha[:, h - 3 :, w - 3 :] = 1.0
    return Trigger("badnets", pattern, alpha)


def blended_trigger(image_shape: tuple[int, int, int], *, alpha: float = 0.2, seed: int = 0) -> Trigger:
    """Blended trigger: blend with one fixed uniform-noise image drawn from ``seed`` at ``alpha``."""
    c, h, w = _check_shape(image_shape)
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    gen = torch.Generator().manual_seed(int(seed))
    pattern = torch.rand(c, h, w, generator=gen)
    return Trigger("blended", pattern, torch.full((c, h, w), float(alpha)))


def make_trigger(name: str, image_shape: tuple[int, int, int], *, alpha: float = 0.2, seed: int = 0) -> Trigger:
    """Trigger by attack name (one of ``ATTACKS``); ``alpha`` and ``seed`` apply to Blended only."""
    if name == "badnets":
        return badnets_trigger(image_shape)
    if name == "blended":
        return blended_trigger(image_shape, alpha=alpha, seed=seed)
    raise ValueError(f"unknown attack {name!r}; expected one of {', '.join(ATTACKS)}")


def poison_dataset(
    images: torch.Tensor,
    labels: torch.Tensor,
    trigger: Trigger,
    *,
    rate: float,
    target: int,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All-to-one poisoning of ``round(rate * N)`` seeded random images (any class).

    Returns new ``(images, labels, mask)``; ``mask`` is the boolean ground truth of poisoned indices.
    """
    _check_images(images, trigger.image_shape)
    if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError("labels must be a 1-D tensor with one label per image")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"poisoning rate must be in [0, 1], got {rate}")
    if target < 0:
        raise ValueError(f"target label must be non-negative, got {target}")
    n = images.shape[0]
    k = int(round(rate * n))
    gen = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(n, generator=gen)[:k]
    mask = torch.zeros(n, dtype=torch.bool)
    mask[idx] = True
    out_x = images.clone()
    out_y = labels.clone()
    if k:
        out_x[mask] = trigger.apply(images[mask])
        out_y[mask] = int(target)
    return out_x, out_y, mask


def build_asr_set(
    images: torch.Tensor, labels: torch.Tensor, trigger: Trigger, *, target: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """ASR test set: every non-target test image with the trigger, labelled ``target``.

    ASR is then the accuracy of a model on this set (the Li et al. convention drops target-class images).
    """
    _check_images(images, trigger.image_shape)
    if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError("labels must be a 1-D tensor with one label per image")
    keep = labels != int(target)
    x = trigger.apply(images[keep])
    y = torch.full((x.shape[0],), int(target), dtype=torch.long)
    return x, y
