"""Shared test settings: quiet Flower, one torch thread, and the repository's shared data folder if present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Floating-point results must not depend on the CPU that runs the tests: torch's kernels pick AVX2, AVX-512 or AMX
# code by CPU (another summation order, FMA or not), and a seeded training run then ends elsewhere. Pin every
# ISA-dispatching layer to its portable path before torch loads: ATen's own kernels, oneDNN (convolutions) and MKL
# (matrix products, conditional numerical reproducibility). BASTIONFL_TEST_NATIVE_ISA=1 runs on the CPU's native
# kernels instead, to check that a test's assertion holds with margin on other numerics too (docs/testing.md).
if os.environ.get("BASTIONFL_TEST_NATIVE_ISA") != "1":
    os.environ["ATEN_CPU_CAPABILITY"] = "default"
    os.environ["ONEDNN_MAX_CPU_ISA"] = "SSE41"
    os.environ["MKL_CBWR"] = "COMPATIBLE"

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """Real datasets shipped beside the checkout (``../shared/data``) or named by BASTIONFL_DATA_DIR."""
    env = os.environ.get("BASTIONFL_DATA_DIR")
    for candidate in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if candidate.is_dir():
            return candidate
    return None


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)
