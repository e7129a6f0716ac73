"""Per-round checkpoints: global model, round number, RNG states and metrics so far, written atomically."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bastionfl.errors import BastionFLError

__all__ = ["CHECKPOINT_NAME", "save_checkpoint", "load_checkpoint", "CheckpointError"]

CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointError(BastionFLError, ValueError):
    """A checkpoint is missing or unreadable."""


def save_checkpoint(
    out_dir: Path, server_round: int, state: dict[str, torch.Tensor], metrics: list[dict[str, Any]],
    config: dict[str, Any], extra: dict[str, Any] | None = None,
) -> Path:
    """Write the state after ``server_round`` to ``out_dir/checkpoint.pt`` (tmp file + rename: never half-written)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "round": server_round,
        "model": {k: v.detach().cpu() for k, v in state.items()},
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        "metrics": metrics,
        "config": config,
        "extra": extra or {},
    }
    path = out_dir / CHECKPOINT_NAME
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(out_dir: Path, *, restore_rng: bool = True) -> dict[str, Any]:
    """Read ``out_dir/checkpoint.pt``; optionally restore the process RNG states it recorded."""
    path = out_dir / CHECKPOINT_NAME
    if not path.exists():
        raise CheckpointError(f"{path}: no checkpoint (nothing to resume)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises several types for a damaged file
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(exc).__name__})") from None
    if restore_rng:
        torch.set_rng_state(payload["rng"]["torch"])
        np.random.set_state(payload["rng"]["numpy"])
        random.setstate(payload["rng"]["python"])
    return payload
