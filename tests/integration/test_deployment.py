"""A real deployment on loopback: flower-superlink + 3 flower-supernode processes, driven by ``flwr run``.

Two xMK-CKKS rounds first insecure, then with TLS certificates generated here; and one secure round of a
2.7M-parameter model (ciphertexts chunked through Flower's object store). Every process is stopped by PID.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastionfl.deploy.certs import make_certificates
from bastionfl.deploy.loopback import LoopbackFederation

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.deployment


def _run(tmp_path: Path, run_config: str, *, tls: bool) -> list[dict]:
    certs = make_certificates(tmp_path / "certs", ["localhost"], ["127.0.0.1"]) if tls else None
    out = tmp_path / "out"
    fed = LoopbackFederation(tmp_path, 3, certs=certs)
    with fed:
        proc = fed.run_app(REPO, f"{run_config} num-clients=3 out-dir='{out}'", timeout=900)
    assert all(p.poll() is not None for p in fed.procs), "a Flower process outlived the test"
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "metrics.json").read_text())
    assert data["status"] == "completed", data["status"]
    return data["rounds"]


@pytest.mark.parametrize("tls", [False, True], ids=["insecure", "tls"])
def test_two_secure_rounds_on_superlink_and_supernodes(tmp_path: Path, tls: bool) -> None:
    rounds = _run(tmp_path, "num-server-rounds=2 secure-aggregation='xmkckks'", tls=tls)
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(r["clients"] == 3 for r in rounds)
    assert {"key_setup", "decrypt", "fuse"} <= set(rounds[0]["stages"])
    assert rounds[-1]["accuracy"] > 0.3


def test_large_model_secure_round_on_superlink_and_supernodes(tmp_path: Path) -> None:
    rounds = _run(tmp_path, "num-server-rounds=1 secure-aggregation='xmkckks' model='wrn-16-4'", tls=False)
    up_per_client = rounds[0]["stage_bytes"]["train"]["up"] / 3
    assert up_per_client > 2_700_000 * 4  # 2.7M parameters, encrypted: far more than their float32 bytes
    assert rounds[0]["accuracy"] > 0.15
