"""Seeded client partitions of a labelled dataset with flwr-datasets' partitioners (IID and Dirichlet).

The partitioners work on Hugging Face ``datasets.Dataset`` objects; we hand them a two-column table
(example index, label) and read back the indices, so the tensors never leave torch.
"""

from __future__ import annotations

import numpy as np
import torch

from bastionfl.errors import BastionFLError

__all__ = ["partition_indices", "PartitionError"]


class PartitionError(BastionFLError, ValueError):
    """The requested partition cannot be built (too few examples, bad arguments)."""


def partition_indices(
    labels: torch.Tensor | np.ndarray, num_partitions: int, *, scheme: str = "iid", alpha: float = 0.5, seed: int = 0
) -> list[np.ndarray]:
    """Example indices of each client's partition; the same arguments always give the same partition."""
    from datasets import Dataset
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner

    y = np.asarray(labels, dtype=np.int64)
    if num_partitions < 1:
        raise PartitionError(f"num_partitions must be >= 1, got {num_partitions}")
    if len(y) < num_partitions:
        raise PartitionError(f"{len(y)} examples cannot be split over {num_partitions} clients")
    table = Dataset.from_dict({"idx": np.arange(len(y)), "label": y})
    if scheme == "iid":
        # IidPartitioner cuts contiguous shards: shuffle with the seed first so shards are random and reproducible
        table = table.shuffle(seed=seed)
        partitioner = IidPartitioner(num_partitions=num_partitions)
    elif scheme == "dirichlet":
        if alpha <= 0:
            raise PartitionError(f"alpha must be > 0, got {alpha}")
        min_size = max(1, min(10, len(y) // (2 * num_partitions)))
        partitioner = DirichletPartitioner(
            num_partitions=num_partitions, partition_by="label", alpha=alpha, min_partition_size=min_size,
            self_balancing=False, shuffle=True, seed=seed,
        )
    else:
        raise PartitionError(f"unknown partition scheme {scheme!r}; expected iid or dirichlet")
    partitioner.dataset = table
    try:
        return [np.asarray(partitioner.load_partition(i)["idx"], dtype=np.int64) for i in range(num_partitions)]
    except ValueError as exc:
        raise PartitionError(f"cannot partition {len(y)} examples into {num_partitions} ({scheme}): {exc}") from None
