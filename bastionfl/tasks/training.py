"""Local training and evaluation loops for the image task (plain SGD on tensors, CPU friendly)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

__all__ = ["train_sgd", "evaluate", "predict", "seeded_generator"]


def seeded_generator(*parts: int) -> torch.Generator:
    """A torch generator seeded from integers (seed, round, partition...), stable across processes."""
    seed = int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])
    return torch.Generator().manual_seed(seed)


def train_sgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    generator: torch.Generator | None = None,
) -> float:
    """Train ``model`` in place with SGD + cross-entropy; returns the mean loss of the last epoch."""
    if len(x) == 0:
        raise ValueError("cannot train on an empty dataset")
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    model.train()
    last = 0.0
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        total, seen = 0.0, 0
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            if len(idx) < 2 and len(x) >= 2:  # BatchNorm needs two examples per batch
                continue
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        last = total / max(seen, 1)
    return last


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in eval mode."""
    model.eval()
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]) if len(x) else torch.empty(0)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of ``model`` on (x, y)."""
    if len(x) == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    logits = predict(model, x, batch_size)
    loss = float(F.cross_entropy(logits, y))
    acc = float((logits.argmax(1) == y).float().mean())
    return loss, acc
