"""Fine-Pruning (Liu, Dolan-Gavitt & Garg, RAID 2018) as server-side repair: prune dormant channels, then fine-tune.

The channels of the model's last convolutional stage (the last BatchNorm2d in module order: ``stage3``'s BN of the
SmallCNN, the final ``bn`` of WRN-16-1, both followed by ReLU and pooling) are ranked by their mean activation
(after ReLU) on the clean repair images. The least active are pruned one by one, in increasing order, while the clean
accuracy on the repair images stays within ``max_drop`` points of the unpruned model and at most ``max_fraction`` of
the channels are pruned (the paper stops at a 4 % drop). The pruned model is then fine-tuned on the same images with
the fine-tuning recipe (``FinetuneConfig``), pruned channels held at zero by a forward mask; at the end a pruned
channel's BN scale and shift are set to zero, so its output (and after ReLU its activation) is zero.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from bastionfl.defenses._common import accuracy, batches, check_dataset, check_positive, clone_model
from bastionfl.defenses.finetune import FinetuneConfig, fit_epochs

__all__ = ["FinePruneConfig", "fineprune_repair", "apply_fineprune_mask", "last_conv_layer", "channel_activation"]

FinePruneMask = dict[str, torch.Tensor]


@dataclass(frozen=True)
class FinePruneConfig:
    """Pruning stop rule (points of clean accuracy, share of channels) and the fine-tuning that follows."""

    max_drop: float = 4.0  # points of clean accuracy on the repair images the pruning may cost (paper: 4 %)
    max_fraction: float = 0.8  # largest share of the layer's channels pruned
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


def last_conv_layer(model: nn.Module) -> str:
    """Name of the last BatchNorm2d with a learnable scale and shift (the last conv stage before pooling)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) and m.affine]
    if not names:
        raise ValueError("fine-pruning needs a model with a BatchNorm2d after its last convolution (it prunes those "
                         "channels)")
    return names[-1]


def _layer(model: nn.Module, name: str) -> nn.BatchNorm2d:
    layer = dict(model.named_modules()).get(name)
    if not isinstance(layer, nn.BatchNorm2d) or not layer.affine:
        raise ValueError(f"mask names {name!r}, which is not a BatchNorm2d layer with scale and shift in this model")
    return layer


@contextmanager
def _forward_mask(layer: nn.Module, keep: torch.Tensor) -> Iterator[None]:
    """Multiply the layer's output channels by ``keep`` (0 = pruned) while the context is open."""
    factor = keep.to(torch.float32).view(1, -1, 1, 1)
    handle = layer.register_forward_hook(lambda _m, _i, out: out * factor.to(out.dtype))
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def channel_activation(model: nn.Module, images: torch.Tensor, layer_name: str | None = None,
                       batch_size: int = 512) -> torch.Tensor:
    """Mean activation (after ReLU) of each channel of ``layer_name`` (default: the last conv stage), eval mode."""
    name = layer_name or last_conv_layer(model)
    layer = _layer(model, name)
    total = torch.zeros(layer.num_features, dtype=torch.float64)
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(torch.relu(out).mean(dim=(2, 3)).sum(0)))
    was_training = model.training
    model.eval()
    try:
        for idx in batches(images.shape[0], batch_size, None):
            model(images[idx])
            total += seen.pop().to(torch.float64).cpu()
    finally:
        handle.remove()
        model.train(was_training)
    return (total / images.shape[0]).to(torch.float32)


def apply_fineprune_mask(model: nn.Module, mask: FinePruneMask) -> nn.Module:
    """Zero, IN PLACE, the BN scale and shift of every channel whose keep flag is False; returns ``model``.

    Call it on each new global model after aggregation so channels pruned once stay pruned.
    """
    for name, keep in mask.items():
        layer = _layer(model, name)
        keep = torch.as_tensor(keep, dtype=torch.bool)
        if keep.shape != layer.weight.shape:
            raise ValueError(f"mask for {name!r} has shape {tuple(keep.shape)}, layer has {tuple(layer.weight.shape)}")
        with torch.no_grad():
            pruned = ~keep.to(layer.weight.device)
            layer.weight[pruned] = 0.0
            layer.bias[pruned] = 0.0
    return model


def _masked_accuracy(model: nn.Module, layer: nn.Module, keep: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    with _forward_mask(layer, keep):
        return accuracy(model, x, y)


def fineprune_repair(
    model: nn.Module,
    clean_images: torch.Tensor,
    clean_labels: torch.Tensor,
    *,
    cfg: FinePruneConfig | None = None,
    seed: int = 0,
    pruned: FinePruneMask | None = None,
) -> tuple[nn.Module, FinePruneMask, dict[str, object]]:
    """Prune the least active last-stage channels of a copy, fine-tune it; returns (copy, keep mask, report).

    ``pruned``: a keep mask from earlier rounds; its pruned channels stay pruned (and count towards
    ``max_fraction``). The mask maps the layer's name to a bool tensor (False = pruned); re-apply it with
    ``apply_fineprune_mask``. The caller's model is not modified; the result is deterministic given ``seed``.
    """
    cfg = cfg or FinePruneConfig()
    check_dataset(clean_images, clean_labels)
    if not 0.0 < cfg.max_drop <= 100.0:
        raise ValueError(f"max_drop must be in (0, 100] points, got {cfg.max_drop}")
    if not 0.0 < cfg.max_fraction < 1.0:
        raise ValueError(f"max_fraction must be in (0, 1), got {cfg.max_fraction}")
    check_positive(epochs=cfg.finetune.epochs, lr=cfg.finetune.lr, batch_size=cfg.finetune.batch_size)
    name = last_conv_layer(model)
    student = clone_model(model)
    layer = _layer(student, name)
    channels = layer.num_features
    keep = torch.ones(channels, dtype=torch.bool)
    if pruned is not None:
        if set(pruned) != {name}:
            raise ValueError(f"saved fine-pruning mask names {sorted(pruned)}, this model's last conv stage is "
                             f"{name!r}")
        keep = torch.as_tensor(pruned[name], dtype=torch.bool).clone()
        if keep.shape != (channels,):
            raise ValueError(f"saved fine-pruning mask has {keep.numel()} channels, layer {name!r} has {channels}")
    x, y = clean_images, clean_labels
    acc_unpruned = accuracy(student, x, y)
    with _forward_mask(layer, keep):
        activation = channel_activation(student, x, name)
    limit = int(cfg.max_fraction * channels)
    already = int((~keep).sum())
    acc_pruned = _masked_accuracy(student, layer, keep, x, y)
    order = [int(c) for c in torch.argsort(activation, stable=True) if keep[c]]
    floor = acc_unpruned - cfg.max_drop / 100
    stopped_by = "max_fraction"
    for c in order:
        if int((~keep).sum()) >= limit:
            break
        trial = keep.clone()
        trial[c] = False
        acc = _masked_accuracy(student, layer, trial, x, y)
        if acc < floor - 1e-12:
            stopped_by = "max_drop"
            break
        keep, acc_pruned = trial, acc
    else:
        stopped_by = "all_ranked"
    gen = torch.Generator().manual_seed(int(seed))
    with _forward_mask(layer, keep):
        fit_epochs(student, x, y, cfg.finetune, gen)
    mask = {name: keep}
    apply_fineprune_mask(student, mask)
    n_pruned = int((~keep).sum())
    report: dict[str, object] = {
        "defense": "fineprune",
        "clean_set_size": int(x.shape[0]),
        "layer": name,
        "channels": channels,
        "pruned_channels": n_pruned,
        "pruned_before": already,
        "pruned_fraction": n_pruned / channels,
        "stopped_by": stopped_by,
        "clean_acc_before": acc_unpruned,
        "clean_acc_pruned": acc_pruned,
        "clean_acc_after": accuracy(student, x, y),
        "cfg_max_drop": cfg.max_drop,
        "cfg_max_fraction": cfg.max_fraction,
        **{f"cfg_finetune_{k}": v for k, v in asdict(cfg.finetune).items()},
    }
    return student, mask, report
