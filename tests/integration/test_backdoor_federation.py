"""Attacks and defenses inside a federation: ASR is measured each round, ABL runs on clients, repair on the server."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastionfl.config import RunConfig
from bastionfl.simulations.simulate import run_simulated


@pytest.mark.parametrize("repair", ["rnp", "nad"])
def test_attack_with_client_abl_and_server_repair(tmp_path: Path, repair: str) -> None:
    cfg = RunConfig.build(num_clients=3, rounds=2, seed=1, attack="badnets", poisoned_clients=1, poison_rate=0.2,
                    client_defense="abl", repair=repair, clean_set_size=120, repair_max_ca_drop=2)
    rounds = run_simulated(cfg, tmp_path)
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:
        assert 0.0 <= r["asr"] <= 1.0
        assert set(r["stages"]) >= {"train", "aggregate", "repair", "evaluate"}
        assert r["repair_s"] > 0 and r["repair"]
        assert len(r["client_metrics"]) == 3  # each client reported its ABL diagnostics
    poisoned = [m for m in rounds[-1]["client_metrics"].values() if m.get("poisoned_examples", 0) > 0]
    assert len(poisoned) == 1  # exactly the configured number of clients held poisoned data


def test_malicious_clients_skip_their_defense(tmp_path: Path) -> None:
    cfg = RunConfig.build(num_clients=3, rounds=1, seed=2, attack="blended", poisoned_clients=1, poisoned_clients_defend=False,
                    client_defense="abl")
    rounds = run_simulated(cfg, tmp_path)
    per_client = rounds[0]["client_metrics"].values()
    attacker = [m for m in per_client if m.get("poisoned_examples", 0) > 0]
    honest = [m for m in per_client if m.get("poisoned_examples", 0) == 0]
    assert len(attacker) == 1 and "abl_round" not in attacker[0]
    assert all("abl_round" in m for m in honest)


@pytest.mark.slow
def test_abl_state_survives_resume_and_counts_benign_isolations(tmp_path: Path) -> None:
    cfg = RunConfig.build(num_clients=3, rounds=3, seed=1, attack="badnets", poisoned_clients=1, poison_rate=0.2,
                          client_defense="abl")
    first = run_simulated(cfg, tmp_path, stop_after=2)
    assert [r["round"] for r in first] == [1, 2]
    rounds = run_simulated(cfg, tmp_path, resume=True)
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert all(m["abl_round"] == 3.0 for m in rounds[-1]["client_metrics"].values()), "ABL restarted on resume"
    iso = rounds[-1]["isolation"]
    assert iso["false_positives"] == iso["isolated"] - iso["true_positives"] >= 0
    assert 0.0 <= iso["precision"] <= 1.0 and iso["poisoned"] > 0
