"""xMK-CKKS inside the federation: same model as plaintext FedAvg, dropouts at each stage, no secret leaves a node."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bastionfl.client.training import local_train
from bastionfl.config import RunConfig
from bastionfl.server.checkpoint import load_checkpoint
from bastionfl.simulations.simulate import run_simulated
from bastionfl.tasks.vectorize import state_to_vector


def _cfg(**kw: object) -> RunConfig:
    base: dict[str, object] = {"num_clients": 3, "rounds": 1, "seed": 5}
    base.update(kw)
    return RunConfig.build(**base)  # type: ignore[arg-type]


def _model(out: Path) -> np.ndarray:
    return state_to_vector(load_checkpoint(out, restore_rng=False)["model"])


@pytest.fixture(scope="module")
def plaintext_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plain")
    run_simulated(_cfg(), out)
    return out


@pytest.mark.parametrize("threat", ["honest-but-curious", "malicious", "malicious-colluding"])
def test_he_fedavg_equals_plaintext_fedavg(tmp_path: Path, plaintext_run: Path, threat: str) -> None:
    """The default profile in every threat model: the model equals plaintext FedAvg of the same updates."""
    rounds = run_simulated(_cfg(secure_aggregation="xmkckks", threat_model=threat), tmp_path)
    diff = np.abs(_model(tmp_path) - _model(plaintext_run)).max()
    assert diff <= 1e-6, diff
    r = rounds[0]
    stages = {"sample", "key_setup", "train", "aggregate", "decrypt", "fuse", "check", "evaluate"}
    stages |= {"consistency"} if threat != "honest-but-curious" else set()
    stages |= {"reveal"} if threat == "malicious-colluding" else set()
    assert stages == set(r["stages"]) and r["uploaders"] == 3 and r["epoch_members"] == 3
    assert {"key_setup", "train", "decrypt"} <= set(r["stage_bytes"])
    per_client = r["client_metrics"].values()
    assert all(m["he_encrypt_s"] > 0 and m["he_share_s"] > 0 for m in per_client)
    assert r["bytes_up"] > 5 * json.loads((plaintext_run / "metrics.json").read_text())["rounds"][0]["bytes_up"]


def _expected_survivor_mean(cfg: RunConfig, init: dict[str, torch.Tensor], survivors: list[int]) -> np.ndarray:
    """FedAvg of the survivors' round-1 models, computed here from the same seeded local training."""
    results = [local_train(cfg, init, pid, cfg.federation.num_clients, 1) for pid in survivors]
    counts = np.array([r.num_examples for r in results], dtype=np.float64)
    models = np.stack([state_to_vector(r.state_dict) for r in results])
    return (models * counts[:, None]).sum(0) / counts.sum()


@pytest.mark.parametrize("stage", ["keygen", "train", "decrypt"])
def test_dropout_at_each_stage_ends_with_a_correct_model(tmp_path: Path, stage: str) -> None:
    """Four clients, one drops once: at key setup it is left out of the epoch, at upload out of the upload set
    (the round goes on, the model is the FedAvg of the three others); at decryption (N-of-N) the others have
    released their shares and never upload those updates again, so the round is skipped with the model unchanged
    (t-of-n decryption is what survives that: tests/integration/test_threshold_federation.py). Never a partial sum."""
    cfg = _cfg(secure_aggregation="xmkckks", inject_dropout=f"{stage}:1:0", rounds=2, num_clients=4)
    rounds = run_simulated(cfg, tmp_path, stop_after=1)
    r = rounds[0]
    label = {"keygen": "keygen", "train": "upload", "decrypt": "decrypt"}[stage]
    assert r["dropouts"] == {label: 1}, r.get("events")
    assert any("dropped out" in e for e in r["events"]) and r.get("attempts", 1) == 1
    torch.manual_seed(cfg.federation.seed)
    from bastionfl.tasks.registry import build_task

    init = build_task(cfg).new_model().state_dict()
    got = _model(tmp_path)
    if stage == "decrypt":
        assert "skipped" in r and r["uploaders"] == 4
        assert np.array_equal(got, state_to_vector(init))
    else:
        assert r["uploaders"] == 3 and "skipped" not in r
        assert np.abs(got - _expected_survivor_mean(cfg, init, [1, 2, 3])).max() <= 1e-5
    # it takes part again in round 2 (under a new key epoch where it had left the epoch)
    rounds = run_simulated(cfg, tmp_path, resume=True)
    assert [x["round"] for x in rounds] == [1, 2] and rounds[1]["uploaders"] == 4
