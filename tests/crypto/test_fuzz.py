"""Mutated decrypt-stage messages with a recomputed checksum never crash the parser (run in a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO


def _run(cases: int, seed: int) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.crypto.fuzz_wire", str(cases), str(seed)],
        cwd=REPO, capture_output=True, text=True, timeout=3600,
    )
    # a negative return code is a signal (SIGABRT from C++, SIGSEGV): the crash this test exists to catch
    assert proc.returncode == 0, f"fuzz process ended with {proc.returncode}: {proc.stdout[-2000:]} {proc.stderr[-2000:]}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"fuzz: {report}")
    return report


def test_fuzz_decrypt_stage_messages_few_thousand():
    report = _run(3000, 1)
    for kind, counts in report["outcomes"].items():
        assert counts["refused"] + counts["accepted"] == 3000, kind
        assert counts["refused"] > 2000, kind


@pytest.mark.slow
def test_fuzz_decrypt_stage_messages_100k():
    report = _run(100_000, 2)
    assert all(c["refused"] + c["accepted"] == 100_000 for c in report["outcomes"].values())
