"""The test session runs on CPU-independent floating-point kernels (see tests/conftest.py)."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.mark.skipif(os.environ.get("BASTIONFL_TEST_NATIVE_ISA") == "1", reason="native kernels asked for")
def test_torch_runs_its_portable_kernels() -> None:
    assert torch.backends.cpu.get_cpu_capability() == "DEFAULT"
    assert os.environ["MKL_CBWR"] == "COMPATIBLE" and os.environ["ONEDNN_MAX_CPU_ISA"] == "SSE41"


def test_torch_uses_the_pinned_thread_count() -> None:
    assert torch.get_num_threads() == 1
