"""Mutated messages (shares first) with a recomputed checksum never crash a parser (run in a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO


def _run(cases: int, seed: int, only: str = "") -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.crypto.fuzz_wire", str(cases), str(seed), only],
        cwd=REPO, capture_output=True, text=True, timeout=3600,
    )
    # a negative return code is a signal (SIGABRT from C++, SIGSEGV): the crash this test exists to catch
    assert proc.returncode == 0, f"fuzz process ended with {proc.returncode}: {proc.stdout[-2000:]} {proc.stderr[-2000:]}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"fuzz: {report}")
    return report


def test_fuzz_every_message_few_thousand():
    report = _run(2000, 1)
    assert len(report["outcomes"]) >= 19  # the share of the honest-but-curious API and every engine message
    for kind, counts in report["outcomes"].items():
        assert counts["refused"] + counts["accepted"] == 2000, kind
        assert counts["refused"] > 1000, kind


@pytest.mark.slow
def test_fuzz_shares_100k():
    """100,000 mutated shares of each kind the server parses (the API's and the engine's, both settings)."""
    report = _run(100_000, 2, only="share")
    assert set(report["outcomes"]) == {"share", "m-round-share", "mc-round-share"}
    assert all(c["refused"] + c["accepted"] == 100_000 for c in report["outcomes"].values())
