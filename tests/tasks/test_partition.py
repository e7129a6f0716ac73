"""Seeded partitions: the same seed gives the same split; splits are disjoint and cover the data."""

from __future__ import annotations

import numpy as np
import pytest

from bastionfl.tasks.partition import PartitionError, partition_indices

LABELS = np.repeat(np.arange(10), 60)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_same_seed_same_partition(scheme: str) -> None:
    a = partition_indices(LABELS, 6, scheme=scheme, alpha=0.3, seed=11)
    b = partition_indices(LABELS, 6, scheme=scheme, alpha=0.3, seed=11)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    c = partition_indices(LABELS, 6, scheme=scheme, alpha=0.3, seed=12)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_disjoint_and_covering(scheme: str) -> None:
    parts = partition_indices(LABELS, 5, scheme=scheme, alpha=0.5, seed=0)
    joined = np.concatenate(parts)
    assert len(joined) == len(set(joined.tolist())) == len(LABELS)


def test_iid_is_balanced_and_dirichlet_is_skewed() -> None:
    iid = partition_indices(LABELS, 5, seed=0)
    assert max(map(len, iid)) - min(map(len, iid)) <= 1
    skew = partition_indices(LABELS, 5, scheme="dirichlet", alpha=0.1, seed=0)
    label_share = [np.bincount(LABELS[p], minlength=10).max() / len(p) for p in skew]
    assert max(label_share) > 0.3  # an alpha of 0.1 concentrates labels far beyond the IID 0.1


def test_errors() -> None:
    with pytest.raises(PartitionError):
        partition_indices(LABELS[:3], 5)
    with pytest.raises(PartitionError):
        partition_indices(LABELS, 2, scheme="shards")
