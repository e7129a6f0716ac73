"""Shared tiny data for the defense tests: sklearn digits (8x8, 1 channel) in [0, 1] and a backdoored SmallCNN."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from bastionfl.defenses._common import accuracy, run_epoch, sgd
from bastionfl.tasks.backdoor import build_asr_set, make_trigger, poison_dataset
from bastionfl.tasks.models import build_model


@pytest.fixture(scope="session")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return x, torch.tensor(d.target, dtype=torch.long)


@pytest.fixture(scope="session")
def backdoored(digits: tuple[torch.Tensor, torch.Tensor]) -> dict[str, object]:
    out = train_backdoored(*digits)
    assert out["asr"] > 0.9 and out["ca"] > 0.8, (out["ca"], out["asr"])
    return out


@pytest.fixture(scope="session")
def backdoored_wrn(digits: tuple[torch.Tensor, torch.Tensor]) -> dict[str, object]:
    """WRN-16-1 (464 batch-norm channels, the paper's model family) with the same BadNets backdoor."""
    out = train_backdoored(*digits, epochs=10, model_name="wrn-16-1")
    assert out["asr"] > 0.9 and out["ca"] > 0.9, (out["ca"], out["asr"])
    return out


def train_backdoored(x: torch.Tensor, y: torch.Tensor, epochs: int = 15, model_name: str = "cnn") -> dict[str, object]:
    """Train ``model_name`` on 1,200 digits with 10 % BadNets poisoning; the other 597 are split into clean set and
    test set."""
    torch.manual_seed(0)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    tr, clean, test = perm[:1200], perm[1200:1400], perm[1400:]
    trig = make_trigger("badnets", (1, 8, 8))
    px, py, _ = poison_dataset(x[tr], y[tr], trig, rate=0.1, target=0, seed=0)
    model: nn.Module = build_model(model_name, 1, 10)
    opt = sgd(model.parameters(), 0.05)
    gen = torch.Generator().manual_seed(1)
    for _ in range(epochs):
        run_epoch(model, px, py, opt, gen, batch_size=64)
    ax, ay = build_asr_set(x[test], y[test], trig, target=0)
    return {
        "model": model,
        "clean": (x[clean], y[clean]),
        "test": (x[test], y[test]),
        "asr_set": (ax, ay),
        "ca": accuracy(model, x[test], y[test]),
        "asr": accuracy(model, ax, ay),
    }
