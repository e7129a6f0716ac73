"""``experiment text-tune``: tuning a finished run with the server's seed is exactly a ``--clean-tune`` federation."""

from __future__ import annotations

from bastionfl.cli import experiment as cli

import json
from pathlib import Path

import pytest
import torch

from bastionfl.config import RunConfig, apply_overrides
from bastionfl.server.checkpoint import load_checkpoint
from bastionfl.simulations import experiment_tune as tune
from bastionfl.simulations.grid import ExperimentError
from tests.conftest import shared_data_dir

DATA = shared_data_dir()
needs_data = pytest.mark.skipif(DATA is None or not (DATA / "sst2").is_dir(),
                                reason="needs the shared data folder with sst2/ (../shared/data or BASTIONFL_DATA_DIR)")


def _cfg(**kw: object) -> RunConfig:
    base = RunConfig.build(dataset="sst2", data_dir=str(DATA), model="tiny-bert", num_clients=2, rounds=2, seed=1,
                     train_subset=120, max_len=32, batch_size=32, lr=1e-3, target_label=1)
    return apply_overrides(base, kw)


def test_seeds_start_with_the_servers_final_round_seed() -> None:
    assert tune.tune_seeds(RunConfig.build(seed=2, rounds=3), 3) == [2_000_009, 2_000_010, 2_000_011]


@needs_data
def test_tuning_a_finished_run_reproduces_the_clean_tune_federation(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from bastionfl.simulations.simulate import run_simulated

    ref_dir, atk_dir, tuned_dir = tmp_path / "ref", tmp_path / "atk", tmp_path / "tuned"
    run_simulated(_cfg(), ref_dir)
    run_simulated(_cfg(attack="badnets", poisoned_clients=1), atk_dir)
    tuned = run_simulated(_cfg(repair="finetune", clean_set_size=40, repair_last_rounds=1), tuned_dir)

    saved = load_checkpoint(ref_dir, restore_rng=False)["model"]
    rows = tune.tune_runs([ref_dir, atk_dir], 40, 2)
    assert [r.name.split("/")[-1] for r in rows] == ["ref", "atk"] and all(len(r.after) == 2 for r in rows)
    # seed 0 of the reference is the federation that tuned its own final aggregate
    assert rows[0].after[0]["accuracy"] == pytest.approx(tuned[-1]["accuracy"], abs=1e-12)
    assert rows[0].after[0]["asr_floor"] == pytest.approx(tuned[-1]["asr_floor"], abs=1e-12)
    # the untuned figures are the run's own final figures
    last = json.loads((atk_dir / "metrics.json").read_text())["rounds"][-1]
    assert rows[1].before["accuracy"] == last["accuracy"] and rows[1].before["asr"] == last["asr"]
    # tuning never writes back into the run folder
    again = load_checkpoint(ref_dir, restore_rng=False)["model"]
    assert all(torch.equal(saved[k], again[k]) for k in saved)
    assert rows[0].after[0]["accuracy"] != rows[0].after[1]["accuracy"] or rows[0].after[0]["loss"] != \
        rows[0].after[1]["loss"]  # another seed is another tune

    text = tune.render_tunes(rows, command="bastionfl experiment text-tune ref atk", clean_set_size=40, wall_s=5.0)
    table = [line for line in text.splitlines() if "/atk |" in line]
    assert len(table) == 2 and table[0].count("±") == 4  # CA, ASR, floor, paired loss over two seeds

    # the tune's own lr and batch size: the same reproduction, and a different model from the run-lr tune
    own = run_simulated(_cfg(repair="finetune", clean_set_size=40, repair_last_rounds=1, repair_lr=3e-4,
                             repair_batch_size=8, repair_lr_decay=True), tmp_path / "own")
    slow = tune.tune_runs([ref_dir, atk_dir], 40, 1, lr=3e-4, batch_size=8, decay=True)
    assert slow[0].after[0]["accuracy"] == pytest.approx(own[-1]["accuracy"], abs=1e-12)
    assert slow[0].after[0]["loss"] == pytest.approx(own[-1]["loss"], abs=1e-12)
    assert slow[0].after[0]["loss"] != rows[0].after[0]["loss"]
    page = tune.render_tunes(slow, command="c", clean_set_size=40, wall_s=1.0)
    assert "lr 0.0003 decaying linearly to 0, batch 8" in page
    assert "--clean-tune 40 --clean-tune-lr 0.0003 --clean-tune-batch 8 --clean-tune-decay" in page

    # a tuned run is refused, and the reference must come first
    assert cli.text_tune([str(ref_dir), str(tuned_dir), "--seeds", "1", "--clean-set", "40",
                      "--results", str(tmp_path / "r.md")]) == 2
    assert "already repaired" in capsys.readouterr().err
    with pytest.raises(ExperimentError, match="must have no attack"):
        tune.tune_runs([atk_dir, ref_dir], 40, 1)
    other = tmp_path / "other"
    run_simulated(_cfg(attack="badnets", poisoned_clients=1, lr=2e-3, rounds=1), other)
    with pytest.raises(ExperimentError, match="differs in .*rounds.*lr|differs in .*lr"):
        tune.tune_runs([ref_dir, other], 40, 1)


def test_bad_folders_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.text_tune([str(tmp_path / "a"), str(tmp_path / "b"), "--results", str(tmp_path / "r.md")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot read" in err and "Traceback" not in err
    assert cli.text_tune([str(tmp_path / "a")]) == 2
    assert "at least one run" in capsys.readouterr().err
    assert cli.text_tune([str(tmp_path / "a"), str(tmp_path / "b"), "--lr", "0.5"]) == 2
    assert "--lr <= 0.01" in capsys.readouterr().err
    run = tmp_path / "half"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"config": {"dataset": "sst2", "model": "tiny-bert", "lr": 1e-3,
                                                             "rounds": 3}, "status": "running", "rounds": []}))
    with pytest.raises(ExperimentError, match="did not complete"):
        tune.load_run(run)
