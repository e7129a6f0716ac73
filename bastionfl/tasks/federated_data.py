"""A client's view of an image dataset: its seeded partition of the training set, with a small cache."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from bastionfl.tasks.data import ImageData, load_image_dataset
from bastionfl.tasks.partition import partition_indices
from bastionfl.tasks.training import seeded_generator

__all__ = ["DataSpec", "load_dataset_cached", "client_partition", "subset_training", "server_clean_set",
           "client_pool"]


@dataclass(frozen=True)
class DataSpec:
    """Everything that decides which examples a client holds (identical on every node of a run)."""

    dataset: str
    data_dir: str
    num_partitions: int
    partition: str
    alpha: float
    seed: int
    train_subset: int = 0
    clean_set_size: int = 0  # examples held back for the server's repair set, never given to a client


@lru_cache(maxsize=2)
def load_dataset_cached(name: str, data_dir: str) -> ImageData:
    """Load a dataset once per process (ClientApps are ephemeral, their process is not)."""
    return load_image_dataset(name, data_dir)


def subset_training(data: ImageData, train_subset: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training tensors, shuffled and cut to ``train_subset`` examples when it is positive."""
    if train_subset <= 0 or train_subset >= len(data.train_x):
        return data.train_x, data.train_y
    order = torch.randperm(len(data.train_x), generator=seeded_generator(seed, 0x5B5))[:train_subset]
    return data.train_x[order], data.train_y[order]


def client_pool(spec: DataSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The training examples the clients share out: the (subset of the) training set minus the server's clean set."""
    x, y = subset_training(load_dataset_cached(spec.dataset, spec.data_dir), spec.train_subset, spec.seed)
    if spec.clean_set_size >= len(x):
        raise ValueError(f"clean_set_size {spec.clean_set_size} leaves no training data for the clients")
    return x[spec.clean_set_size:], y[spec.clean_set_size:]


def server_clean_set(spec: DataSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The server's small clean set for repair: disjoint from every client's data and from the test set."""
    x, y = subset_training(load_dataset_cached(spec.dataset, spec.data_dir), spec.train_subset, spec.seed)
    return x[: spec.clean_set_size], y[: spec.clean_set_size]


@lru_cache(maxsize=4)
def _partitions(spec: DataSpec) -> tuple[tuple[int, ...], ...]:
    _, y = client_pool(spec)
    parts = partition_indices(y, spec.num_partitions, scheme=spec.partition, alpha=spec.alpha, seed=spec.seed)
    return tuple(tuple(int(i) for i in p) for p in parts)


def client_partition(spec: DataSpec, partition_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of client ``partition_id`` under ``spec``."""
    if not 0 <= partition_id < spec.num_partitions:
        raise ValueError(f"partition-id {partition_id} outside 0..{spec.num_partitions - 1}")
    x, y = client_pool(spec)
    idx = torch.tensor(_partitions(spec)[partition_id], dtype=torch.long)
    return x[idx], y[idx]
