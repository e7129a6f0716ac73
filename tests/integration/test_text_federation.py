"""A whole text federation on the Simulation Engine: tiny BERT, SST-2 slice, BadNets on one client, BTU everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastionfl.tasks.base import poisoned_partitions
from bastionfl.config import RunConfig
from bastionfl.simulations.simulate import run_simulated
from tests.conftest import shared_data_dir

DATA = shared_data_dir()
pytestmark = pytest.mark.skipif(DATA is None or not (DATA / "sst2").is_dir(),
                                reason="needs the shared data folder with sst2/ (../shared/data or BASTIONFL_DATA_DIR)")


def test_two_round_text_federation_with_btu(tmp_path: Path) -> None:
    cfg = RunConfig.build(dataset="sst2", data_dir=str(DATA), model="tiny-bert", num_clients=2, rounds=2, seed=1,
                    train_subset=240, max_len=32, batch_size=32, lr=1e-3, attack="badnets", poisoned_clients=1,
                    poison_rate=0.1, target_label=1, client_defense="btu", poisoned_clients_defend=True)
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


def test_server_clean_tune_runs_in_the_last_round_only(tmp_path: Path) -> None:
    """repair = finetune on text: BTU's clean tune on test-split sentences, after the last aggregation only."""
    cfg = RunConfig.build(dataset="sst2", data_dir=str(DATA), model="tiny-bert", num_clients=2, rounds=2, seed=1,
                    train_subset=120, max_len=32, batch_size=32, lr=1e-3, repair="finetune", clean_set_size=40,
                    repair_last_rounds=1)
    rounds = run_simulated(cfg, tmp_path)
    assert "repair" not in rounds[0] and "repair_s" not in rounds[0]
    rep = rounds[1]["repair"]
    assert rep["defense"] == "btu_clean_tune" and rep["clean_set_size"] == 40 and rep["lr"] == 1e-3
    assert rounds[1]["repair_s"] > 0


def test_server_clean_set_is_held_out_of_dev_and_sized(tmp_path: Path) -> None:
    from bastionfl.tasks.text import DatasetError, TextData, load_text_dataset
    from bastionfl.tasks.text_task import TextTask

    def server_clean_sentences(data: TextData, cfg: RunConfig) -> tuple[list[str], list[int]] | None:
        return TextTask(cfg, data).clean_set()

    data = load_text_dataset("sst2", DATA)  # type: ignore[arg-type]
    cfg = RunConfig.build(dataset="sst2", data_dir=str(DATA), model="tiny-bert", lr=1e-3, clean_set_size=100)
    s, y = server_clean_sentences(data, cfg)
    assert len(s) == len(y) == 100 and set(s) <= set(data.test_sentences)
    assert not set(s) & set(data.dev_sentences)  # (SST-2 itself repeats 2 test sentences in train)
    assert server_clean_sentences(data, cfg) == (s, y)  # seeded
    with pytest.raises(DatasetError, match="more than"):
        server_clean_sentences(data, RunConfig.build(dataset="sst2", model="tiny-bert", lr=1e-3, clean_set_size=10**5))
    same = TextData("sst2", data.train_sentences, data.train_labels, data.dev_sentences, data.dev_labels,
                    list(data.dev_sentences), list(data.dev_labels))
    with pytest.raises(DatasetError, match="dev split"):
        server_clean_sentences(same, cfg)
