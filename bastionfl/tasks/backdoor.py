"""Image backdoor triggers and data poisoning (BadNets patch, Blended), all-to-one or all-to-all; ASR test sets.

Trigger definitions live with the task (clients poison, the server measures ASR with the same trigger); the
simulated attackers that use them are configured in the run configuration (attack, trigger_*, blend_alpha,
attack_mode, poisoned_clients, attack_start_round, boost_factor).

Images are float tensors in [0, 1] of shape (N, C, H, W). A trigger is a per-pixel blend
``x' = (1 - a) * x + a * p`` with an alpha map ``a`` and a pattern ``p``:

* BadNets (Gu et al. 2017) writes a patch (``a`` = 1 there, 0 elsewhere) into every channel. The default patch is
  the ``gridTrigger`` of the ABL/NAD/RNP code family: a fixed 3x3 black/white grid in the bottom-right corner;
  ``trigger_type`` (grid | square | noise), ``trigger_size`` and ``trigger_position`` (a corner, or random per image)
  vary it.
* Blended (Chen et al. 2017) blends the whole image with one fixed pattern (default uniform noise drawn from a seed)
  at ``a`` = alpha everywhere (default 0.2), as in BackdoorBench's fixed-image Blended.

Poisoning picks a seeded random share of *all* training images (target-class images included, as in the official
``all2one`` mode). All-to-one relabels them to the target; all-to-all relabels class ``y`` to ``(y + 1) mod C``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "ATTACKS",
    "TRIGGER_TYPES",
    "POSITIONS",
    "MODES",
    "Trigger",
    "make_trigger",
    "badnets_trigger",
    "blended_trigger",
    "poison_dataset",
    "build_asr_set",
    "poison_labels",
]

ATTACKS = ("badnets", "blended")
TRIGGER_TYPES = ("auto", "grid", "square", "noise")
POSITIONS = ("bottom-right", "top-left", "random")
MODES = ("all-to-one", "all-to-all")

# 3x3 grid of the official gridTrigger (rows top to bottom, 1 = white), placed at the bottom-right corner.
_GRID = ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0), (1.0, 0.0, 1.0))


@dataclass(frozen=True)
class Trigger:
    """A blend trigger for images of shape ``(C, H, W)``: ``x' = (1 - alpha_map) * x + alpha_map * pattern``.

    With ``random_position`` the trigger's patch (the box where ``alpha_map`` > 0) moves to a random place in
    every image; the places follow the generator passed to ``apply`` (seeded: the same images get the same places).
    """

    name: str
    pattern: torch.Tensor  # (C, H, W) in [0, 1]
    alpha_map: torch.Tensor  # (C, H, W) in [0, 1]
    random_position: bool = False

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.pattern.shape
        return int(c), int(h), int(w)

    def apply(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Return triggered copies of ``images`` (N, C, H, W); the input is not modified."""
        _check_images(images, self.image_shape)
        if self.random_position:
            return self._apply_moved(images, generator or torch.Generator().manual_seed(0))
        a = self.alpha_map.to(images.dtype)
        out = (1.0 - a) * images + a * self.pattern.to(images.dtype)
        return out.clamp_(0.0, 1.0)

    def _apply_moved(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        rows = torch.nonzero(self.alpha_map.amax(dim=(0, 2)) > 0).flatten()
        cols = torch.nonzero(self.alpha_map.amax(dim=(0, 1)) > 0).flatten()
        out = images.clone()
        if len(rows) == 0:
            return out
        r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        a = self.alpha_map[:, r0:r1, c0:c1].to(images.dtype)
        p = self.pattern[:, r0:r1, c0:c1].to(images.dtype)
        _, h, w = self.image_shape
        ph, pw = r1 - r0, c1 - c0
        ys = torch.randint(0, h - ph + 1, (images.shape[0],), generator=gen)
        xs = torch.randint(0, w - pw + 1, (images.shape[0],), generator=gen)
        for i in range(images.shape[0]):
            y, x = int(ys[i]), int(xs[i])
            region = out[i, :, y : y + ph, x : x + pw]
            out[i, :, y : y + ph, x : x + pw] = (1.0 - a) * region + a * p
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


def _patch(kind: str, c: int, size: int, seed: int) -> torch.Tensor:
    """A (C, size, size) patch pattern: the official grid (scaled up), a white square, or seeded noise."""
    if kind == "grid":
        grid = torch.tensor(_GRID)
        idx = torch.arange(size) * 3 // size
        return grid[idx][:, idx].expand(c, size, size).clone()
    if kind == "square":
        return torch.ones(c, size, size)
    if kind == "noise":
        return torch.rand(c, size, size, generator=torch.Generator().manual_seed(int(seed)))
    raise ValueError(f"unknown trigger type {kind!r}; expected one of {', '.join(TRIGGER_TYPES[1:])}")


def _place(h: int, w: int, size: int, position: str) -> tuple[int, int]:
    if position in ("bottom-right", "random"):  # a random trigger starts in the corner and moves per image
        return h - size, w - size
    if position == "top-left":
        return 0, 0
    raise ValueError(f"unknown trigger position {position!r}; expected one of {', '.join(POSITIONS)}")


def badnets_trigger(image_shape: tuple[int, int, int], *, trigger_type: str = "grid", size: int = 3,
                    position: str = "bottom-right", seed: int = 0) -> Trigger:
    """BadNets patch trigger (default: the official 3x3 grid in the bottom-right corner of every channel)."""
    c, h, w = _check_shape(image_shape)
    kind = "grid" if trigger_type == "auto" else trigger_type
    if size < 1 or h < size or w < size:
        raise ValueError(f"BadNets trigger of size {size} needs images of at least {size}x{size}, got {h}x{w}")
    y, x = _place(h, w, size, position)
    pattern = torch.zeros(c, h, w)
    alpha = torch.zeros(c, h, w)
    pattern[:, y : y + size, x : x + size] = _patch(kind, c, size, seed)
    alpha[:, y : y + size, x : x + size] = 1.0
    return Trigger("badnets", pattern, alpha, random_position=position == "random")


def blended_trigger(image_shape: tuple[int, int, int], *, alpha: float = 0.2, seed: int = 0,
                    trigger_type: str = "noise") -> Trigger:
    """Blended trigger: blend the whole image with one fixed pattern (default noise drawn from ``seed``) at
    ``alpha``."""
    c, h, w = _check_shape(image_shape)
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    kind = "noise" if trigger_type == "auto" else trigger_type
    if kind == "noise":
        pattern = torch.rand(c, h, w, generator=torch.Generator().manual_seed(int(seed)))
    elif kind == "grid":
        pattern = torch.tensor(_GRID).repeat((h + 2) // 3, (w + 2) // 3)[:h, :w].expand(c, h, w).clone()
    else:
        pattern = _patch(kind, c, 1, seed).expand(c, h, w).clone()
    return Trigger("blended", pattern, torch.full((c, h, w), float(alpha)))


def make_trigger(name: str, image_shape: tuple[int, int, int], *, alpha: float = 0.2, seed: int = 0,
                 trigger_type: str = "auto", size: int = 0, position: str = "bottom-right") -> Trigger:
    """Trigger by attack name (one of ``ATTACKS``): BadNets takes type, size (0: 3) and position; Blended takes
    alpha and type; both draw a noise pattern from ``seed``."""
    if name == "badnets":
        return badnets_trigger(image_shape, trigger_type=trigger_type, size=size or 3, position=position, seed=seed)
    if name == "blended":
        return blended_trigger(image_shape, alpha=alpha, seed=seed, trigger_type=trigger_type)
    raise ValueError(f"unknown attack {name!r}; expected one of {', '.join(ATTACKS)}")


def poison_labels(labels: torch.Tensor, *, target: int, mode: str = "all-to-one",
                  num_classes: int = 10) -> torch.Tensor:
    """The attacker's labels for triggered images: the target (all-to-one) or ``(y + 1) mod C`` (all-to-all)."""
    if mode == "all-to-one":
        return torch.full_like(labels, int(target))
    if mode == "all-to-all":
        return (labels + 1) % int(num_classes)
    raise ValueError(f"unknown attack mode {mode!r}; expected one of {', '.join(MODES)}")


def poison_dataset(
    images: torch.Tensor,
    labels: torch.Tensor,
    trigger: Trigger,
    *,
    rate: float,
    target: int,
    seed: int,
    mode: str = "all-to-one",
    num_classes: int = 10,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Poisoning of ``round(rate * N)`` seeded random images (any class), relabelled by ``mode``.

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
        out_x[mask] = trigger.apply(images[mask], gen)
        out_y[mask] = poison_labels(labels[mask], target=target, mode=mode, num_classes=num_classes)
    return out_x, out_y, mask


def build_asr_set(
    images: torch.Tensor, labels: torch.Tensor, trigger: Trigger, *, target: int, mode: str = "all-to-one",
    num_classes: int = 10, seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ASR test set: the triggered test images with the attacker's labels.

    All-to-one drops target-class images (the Li et al. convention); all-to-all keeps every image. ASR is the
    accuracy of a model on this set. ``seed`` places a random-position trigger.
    """
    _check_images(images, trigger.image_shape)
    if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError("labels must be a 1-D tensor with one label per image")
    keep = labels != int(target) if mode == "all-to-one" else torch.ones_like(labels, dtype=torch.bool)
    x = trigger.apply(images[keep], torch.Generator().manual_seed(int(seed)))
    y = poison_labels(labels[keep], target=target, mode=mode, num_classes=num_classes).long()
    return x, y
