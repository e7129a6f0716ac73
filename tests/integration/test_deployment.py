"""A real deployment on loopback: flower-superlink + 3 flower-supernode processes, driven by ``flwr run``.

First insecure, then with TLS certificates generated here. Every process is stopped by PID at the end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastionfl.simulations.certs import make_certificates
from bastionfl.simulations.loopback import LoopbackFederation

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.deployment


@pytest.mark.parametrize("tls", [False, True], ids=["insecure", "tls"])
def test_two_rounds_on_superlink_and_supernodes(tmp_path: Path, tls: bool) -> None:
    certs = make_certificates(tmp_path / "certs", ["localhost"], ["127.0.0.1"]) if tls else None
    out = tmp_path / "out"
    fed = LoopbackFederation(tmp_path, 3, certs=certs)
    with fed:
        proc = fed.run_app(REPO, f"num-server-rounds=2 num-clients=3 out-dir='{out}'", timeout=900)
    assert all(p.poll() is not None for p in fed.procs), "a Flower process outlived the test"
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "metrics.json").read_text())
    assert data["status"] == "completed"
    assert [r["round"] for r in data["rounds"]] == [1, 2]
    assert all(r["clients"] == 3 for r in data["rounds"])
    assert data["rounds"][-1]["accuracy"] > 0.3
