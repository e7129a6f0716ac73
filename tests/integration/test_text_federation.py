"""A whole text federation on the Simulation Engine: tiny BERT, SST-2 slice, BadNets on one client, BTU everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastionfl.client.local import poisoned_partitions
from bastionfl.config import RunConfig
from bastionfl.simulations.simulate import run_simulated
from tests.conftest import shared_data_dir

DATA = shared_data_dir()
pytestmark = pytest.mark.skipif(DATA is None or not (DATA / "sst2").is_dir(),
                                reason="needs the shared data folder with sst2/ (../shared/data or BASTIONFL_DATA_DIR)")


def test_two_round_text_federation_with_btu(tmp_path: Path) -> None:
    cfg = RunConfig(dataset="sst2", data_dir=str(DATA), model="tiny-bert", num_clients=2, rounds=2, seed=1,
                    train_subset=240, max_len=32, batch_size=32, lr=1e-3, attack="badnets", poisoned_clients=1,
                    poison_rate=0.1, target_label=1, client_defense="btu", threat="honest")
    rounds = run_simulated(cfg, tmp_path)
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:
        for key in ("accuracy", "loss", "asr", "asr_floor"):
            assert 0.0 <= r[key] <= (1.0 if key != "loss" else 10.0), (key, r[key])
        assert r["bytes_up"] > 2 * 3_500_000  # two uploads of a ~1M-parameter float32 model
        clients = r["client_metrics"]
        assert len(clients) == 2 and all(m["btu_flagged"] > 0 for m in clients.values())
        # exposure runs once per client (round 1); round 2 re-applies the suspects kept in the node's state
        assert all(m["btu_exposed"] == (1.0 if r["round"] == 1 else 0.0) for m in clients.values())
        poisoned = [m for m in clients.values() if m.get("poisoned_examples", 0) > 0]
        assert len(poisoned) == len(poisoned_partitions(cfg, 2)) == 1
        assert poisoned[0]["btu_trigger_found"] in (0.0, 1.0)
        assert sum("btu_trigger_found" in m for m in clients.values()) == 1  # only the poisoned client knows it
    assert (tmp_path / "metrics.json").exists()
