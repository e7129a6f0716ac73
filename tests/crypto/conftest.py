"""Shared, module-scoped crypto fixtures (SEAL contexts and key epochs are slow to build)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest

from bastionfl.crypto import (
    AggregatedPublicKey,
    CrsSeed,
    KeyShare,
    Params,
    PublicKeyShare,
    custom_params,
    get_profile,
)

_rounds = itertools.count(1)


def next_round() -> int:
    """A fresh round number: key shares refuse to answer the same round twice."""
    return next(_rounds)


@dataclass
class Epoch:
    params: Params
    crs: CrsSeed
    keys: list[KeyShare]
    apk: AggregatedPublicKey


def make_epoch(params: Params, n: int, run_id: str = "test-run", epoch: int = 0) -> Epoch:
    """n clients' key shares (through the wire, as in deployment) and the accepted aggregated key."""
    crs = CrsSeed.from_session(run_id, epoch)
    keys = [KeyShare.generate(params, crs) for _ in range(n)]
    shares = [PublicKeyShare.from_bytes(params, k.public_share().to_bytes()) for k in keys]
    apk = AggregatedPublicKey.from_bytes(params, AggregatedPublicKey.aggregate(params, crs, shares).to_bytes())
    for k in keys:
        k.accept(apk)
    return Epoch(params, crs, keys, apk)


@pytest.fixture(scope="session")
def precise() -> Params:
    return get_profile("precise")


@pytest.fixture(scope="session")
def lean() -> Params:
    return get_profile("lean")


@pytest.fixture(scope="session")
def tiny() -> Params:
    """A small valid parameter set (N=4096) for fuzzing and protocol-logic tests."""
    return custom_params(4096, [40], 40, 30, 16, name="tiny", below_standard=True)


@pytest.fixture(scope="module")
def precise3(precise: Params) -> Epoch:
    return make_epoch(precise, 3)


@pytest.fixture(scope="module")
def tiny3(tiny: Params) -> Epoch:
    return make_epoch(tiny, 3, run_id="tiny-run")


def values(rng: np.random.Generator, n: int, size: int, bound: float = 1.0) -> list[np.ndarray]:
    return [rng.uniform(-bound, bound, size) for _ in range(n)]
