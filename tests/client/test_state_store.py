"""A client's defense state survives a resumed run: written per partition and round, read back by round."""

from __future__ import annotations

from pathlib import Path

import torch

from bastionfl.client.abl_training import abl_config
from bastionfl.client.state_store import load_client_state, save_client_state
from bastionfl.config import ConfigError, RunConfig


def test_state_is_read_back_from_the_latest_earlier_round(tmp_path: Path) -> None:
    root = str(tmp_path)
    assert load_client_state(root, 3, 5) == {}
    for r in (1, 2, 3):
        save_client_state(root, 3, r, {"abl": f"state after {r}"})
    save_client_state(root, 4, 3, {"abl": "another partition"})
    assert load_client_state(root, 3, 3) == {"abl": "state after 2"}, "a re-run round starts from the round before"
    assert load_client_state(root, 3, 9) == {"abl": "state after 3"}
    assert sorted(p.name for p in (tmp_path / "partition-3").iterdir()) == ["round-2.json", "round-3.json"]


def test_abl_keys_reach_its_config_and_bad_pairs_are_refused() -> None:
    cfg = RunConfig.build(client_defense="abl", abl_isolation_rounds=3, abl_loss="lga", abl_unlearn_lr=1e-3)
    abl = abl_config(cfg)
    assert (abl.isolation_rounds, abl.loss, abl.unlearn_lr) == (3, "lga", 1e-3)
    try:
        RunConfig.build(abl_learned_to=2.0)
    except ConfigError as exc:
        assert "'abl_learned_to'" in str(exc)
    else:
        raise AssertionError("abl_learned_to above abl_learned_from must be refused")


def test_benign_isolations_are_false_positives() -> None:
    from bastionfl.defenses.abl import _isolation_metrics

    out = _isolation_metrics([1, 2, 3], torch.zeros(10, dtype=torch.bool), 10)
    assert out["isolation_false_positives"] == 3.0 and out["isolation_precision"] == 0.0
