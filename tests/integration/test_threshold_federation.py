"""t-of-n decryption in whole federations (real ClientApps behind an in-process grid, pseudonym admission):
clients that vanish after their upload no longer restart the round, the epoch survives them, and the model equals
plaintext FedAvg of the uploaders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bastionfl.client.app import app as client_app
from bastionfl.config import RunConfig
from bastionfl.server.checkpoint import load_checkpoint
from bastionfl.server.federation import run_federation
from bastionfl.simulations.auth_setup import prepare_simulated_ha
from bastionfl.tasks.registry import build_task
from bastionfl.tasks.vectorize import state_to_vector
from tests.flower_helpers import LoopGrid, node_context


def _run(out: Path, n: int, rounds: int, seed: int, **kw: Any) -> list[dict[str, Any]]:
    base: dict[str, Any] = {"num_clients": n, "rounds": rounds, "seed": seed, "out_dir": str(out),
                            "he_profile": "lean", "auth": "pseudonym"}  # lean: fast; precise where 1e-6 must hold
    base.update(kw)
    cfg = RunConfig.build(**base)
    prepare_simulated_ha(cfg, out)
    contexts = {100 + i: node_context(i, n, node_id=100 + i, state_dir=out / "node-state") for i in range(n)}
    for c in contexts.values():  # each operator allows t-of-n decryption at the run's threshold
        c.node_config["threshold"] = str(cfg.secure.threshold)
    return run_federation(LoopGrid(client_app, contexts), cfg, out)


def _model(out: Path) -> np.ndarray:
    return state_to_vector(load_checkpoint(out, restore_rng=False)["model"])


FLAKY = {"secure_aggregation": "xmkckks", "threshold": 0.6, "dropout_rate": 0.3, "dropout_stages": "decrypt"}


def _acceptance(tmp_path: Path, n: int, rounds: int, seed: int, profile: str = "lean") -> None:
    history = _run(tmp_path / "he", n, rounds, seed, **FLAKY, he_profile=profile)
    _run(tmp_path / "plain", n, rounds, seed)
    t = -(-6 * n // 10)
    assert [r["round"] for r in history] == list(range(1, rounds + 1))
    assert all(r["restarts"] == 0 and r["key_epoch"] == 1 and r["uploaders"] == n for r in history)
    assert all(r["shares_used"] == t for r in history)
    # a vanished member was in a decrypting set exactly when the stage needed another attempt (whether the seeded
    # droppers fall in the first set depends on the members' order, i.e. their fresh keys)
    assert all((r["decrypt_attempts"] > 1) == (r["dropouts"].get("decrypt", 0) > 0) for r in history)
    if rounds >= 3:  # 5, 5 and 8 of 20 vanish: that none was ever asked has probability below 1e-5
        assert any(r["decrypt_attempts"] > 1 for r in history)
    diff = float(np.abs(_model(tmp_path / "he") - _model(tmp_path / "plain")).max())
    assert diff <= 1e-6, diff


def test_flaky_fleet_small(tmp_path: Path) -> None:
    """8 clients, t = 5, 30 % vanish after their upload: no restart, one epoch, FedAvg of the uploaders exact."""
    _acceptance(tmp_path, 8, 1, 2, profile="precise")  # 3 of the 8 vanish (n - t), seeded


@pytest.mark.slow
def test_flaky_fleet_twenty_clients(tmp_path: Path) -> None:
    """The acceptance run: 20 clients, threshold 0.6, dropout_rate 0.3 at decrypt, pseudonym admission, 3 rounds."""
    _acceptance(tmp_path, 20, 3, 2, profile="precise")  # lean's 2^20 flood of 12 shares reaches ~1e-6 a round


def test_too_many_vanish_fails_cleanly(tmp_path: Path) -> None:
    """n - t + 1 decrypting members vanish: nothing is decrypted (never a partial sum); the round is skipped with
    the model unchanged, since the signers never upload that round's updates again."""
    history = _run(tmp_path, 4, 1, 0, **{**FLAKY, "dropout_rate": 0.9})
    assert "nothing is decrypted" in history[0]["skipped"]
    cfg = RunConfig.build(num_clients=4, seed=0)
    torch.manual_seed(0)  # the federation's initial model, as run_federation makes it
    start = build_task(cfg).new_model().state_dict()
    assert np.array_equal(_model(tmp_path), state_to_vector(start))


def test_member_of_u_vanishing_at_consistency_is_left_out(tmp_path: Path) -> None:
    """Malicious t-of-n: a member of U vanishes before signing the transcript. The round is not skipped: U' = U
    minus that member is re-proposed and signed, t members decrypt, and the model equals plaintext FedAvg of U'
    (a plaintext run where that client drops before training)."""
    n, seed, pid = 8, 3, 2
    common = {"threshold": 0.6, "threat_model": "malicious", "he_profile": "precise"}
    history = _run(tmp_path / "he", n, 1, seed, secure_aggregation="xmkckks", inject_dropout=f"consistency:1:{pid}",
                   **common)
    _run(tmp_path / "plain", n, 1, seed, inject_dropout=f"train:1:{pid}")
    r = history[0]
    assert "skipped" not in r and r["restarts"] == 0 and r["reproposals"] == 1
    assert r["uploaders"] == n - 1 and r["shares_used"] == -(-6 * n // 10) and r["dropouts"] == {"consistency": 1}
    diff = float(np.abs(_model(tmp_path / "he") - _model(tmp_path / "plain")).max())
    assert diff <= 1e-6, diff
