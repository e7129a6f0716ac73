"""A model's state as one float64 vector and back: what secure aggregation encrypts and sums."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["state_to_vector", "vector_to_state", "state_delta", "apply_delta"]


def state_to_vector(state: dict[str, torch.Tensor]) -> np.ndarray:
    """Concatenate every tensor of ``state`` (in key order) as float64."""
    if not state:
        return np.zeros(0, dtype=np.float64)
    return np.concatenate([v.detach().cpu().to(torch.float64).reshape(-1).numpy() for v in state.values()])


def vector_to_state(vector: np.ndarray, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Split ``vector`` into tensors shaped and typed like ``like`` (integer buffers are rounded)."""
    total = sum(v.numel() for v in like.values())
    if vector.shape != (total,):
        raise ValueError(f"vector has shape {vector.shape}, the model needs ({total},)")
    out: dict[str, torch.Tensor] = {}
    offset = 0
    for key, ref in like.items():
        chunk = torch.from_numpy(np.ascontiguousarray(vector[offset : offset + ref.numel()])).reshape(ref.shape)
        out[key] = chunk.to(ref.dtype) if ref.is_floating_point() else chunk.round().to(ref.dtype)
        offset += ref.numel()
    return out


def state_delta(new: dict[str, torch.Tensor], old: dict[str, torch.Tensor]) -> np.ndarray:
    """``new - old`` as one float64 vector (the update a client encrypts)."""
    return state_to_vector(new) - state_to_vector(old)


def apply_delta(old: dict[str, torch.Tensor], delta: np.ndarray) -> dict[str, torch.Tensor]:
    """``old + delta`` as a state dict typed like ``old``."""
    return vector_to_state(state_to_vector(old) + delta, old)
