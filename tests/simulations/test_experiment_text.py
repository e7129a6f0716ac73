"""``bastionfl experiment text``: row selection, the results page and its goal column, clear errors, a quick grid."""

from __future__ import annotations

from bastionfl.cli import experiment as cli

import json
from pathlib import Path

import pytest

from bastionfl.config import RunConfig
from bastionfl.simulations import experiment_text as exp
from bastionfl.simulations.experiment_text import Arm, ArmResult, ExperimentError, goal_met, render_results
from tests.conftest import shared_data_dir

DATA = shared_data_dir()


def _rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("|")]


def test_only_selects_attacks_or_single_rows() -> None:
    assert len(exp.select_arms(None)) == 8
    assert [a.key for a in exp.select_arms("badnets")] == ["badnets/none", "badnets/btu"]
    assert [a.key for a in exp.select_arms("style/btu, addsent/btu")] == ["addsent/btu", "style/btu"]
    assert [a.key for a in exp.select_arms("badnets,badnets/btu")] == ["badnets/none", "badnets/btu"]
    for bad in ("badnet", "badnets/abl", "badnets,x"):
        with pytest.raises(ExperimentError, match="neither an attack"):
            exp.select_arms(bad)
    with pytest.raises(ExperimentError, match="selects no row"):
        exp.select_arms(" , ")


def test_goal_is_relative_to_the_clean_models_asr_and_needs_both_bounds() -> None:
    arm = Arm("badnets", "btu")
    ref = ArmResult(Arm("none", "none"), 0.91, 0.12, 0.15, 1.0)  # the clean model calls 12 % of triggered positive
    assert goal_met(ArmResult(arm, 0.90, 0.13, 0.08, 1.0), ref)  # 1 point above it, 1 point of CA lost
    assert not goal_met(ArmResult(arm, 0.90, 0.1301, 0.08, 1.0), ref)  # ASR just above clean + 1 point
    assert not goal_met(ArmResult(arm, 0.8999, 0.05, 0.04, 1.0), ref)  # CA loss just above 1 point
    assert not goal_met(ArmResult(arm, 0.95, None, None, 1.0), ref)
    assert not goal_met(ArmResult(arm, 0.91, 0.0, 0.0, 1.0), ArmResult(Arm("none", "none"), 0.91, None, 0.1, 1.0))


def test_results_page_reports_rows_losses_goal_and_pending_rows() -> None:
    base = RunConfig.build(dataset="sst2", model="minilm", text_layers=0, train_subset=3000, rounds=3)
    ref = ArmResult(Arm("none", "none"), 0.8555, 0.12, None, 330.0)
    rows = [ArmResult(Arm("badnets", "none"), 0.8509, 0.965, 0.1706, 312.0),
            ArmResult(Arm("badnets", "btu"), 0.8501, 0.13, 0.08, 354.0, flagged=41.0, trigger_found="2/2",
                      tokens={0: {"cut": ["cf", "boring"], "spared": [",", "`"]}})]
    text = render_results(base, ref, rows, command="bastionfl experiment text --only badnets", total_wall_s=996.0,
                          load=(1.0, 2.0, 3.0), cores=2, pending=[Arm("style", "btu")])
    assert "bastionfl experiment text --only badnets" in text and "Seed 0" in text
    assert "all layers" in text and "3,000" in text and "still to run: style/btu" in text
    table = _rows(text)[2:]
    assert table[0][:6] == ["none", "none", "85.55", "0.00", "12.00", "-"]  # the clean model's ASR; no floor given
    assert table[1][3] == "0.46" and table[1][8] == "no"  # ASR 96.5 %: no
    assert table[2][3] == "0.54" and table[2][6] == "41.0" and table[2][7] == "2/2" and table[2][8] == "**yes**"
    assert "* badnets/btu, client 0: cut (2): `cf` `boring`; spared (2): `,` `` ` ``" in text


def test_bad_arguments_are_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.text(["--data-dir", str(tmp_path), "--only", "nothing"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "neither an attack" in err
    assert cli.text(["--data-dir", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train.tsv" in err and "Traceback" not in err
    assert cli.text(["--data-dir", str(tmp_path), "--layers", "-1"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert cli.text(["--data-dir", str(tmp_path), "--clean-tune", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "at least 10" in err
    assert cli.text(["--data-dir", str(tmp_path), "--clean-tune-lr", "2e-5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "give --clean-tune N too" in err


def test_reference_is_reused_only_from_the_same_configuration(tmp_path: Path) -> None:
    base = exp.base_config(cli._text_parser().parse_args(["--data-dir", "data"]))
    run = tmp_path / "none-none"
    run.mkdir()
    rounds = [{"round": r, "accuracy": 0.8 + r / 100, "asr_floor": 0.2 - r / 100, "time_s": 100.0} for r in (1, 2, 3)]
    config = {**base.flat(), "attack": "none", "client_defense": "none", "out_dir": "elsewhere",
              "data_dir": "other/data"}
    (run / "metrics.json").write_text(json.dumps({"config": config, "status": "completed", "rounds": rounds}))
    ref = exp.load_reference(run, base)
    older = {k: v for k, v in config.items() if k != "repair_last_rounds"}  # written before the field existed
    (run / "metrics.json").write_text(json.dumps({"config": older, "status": "completed", "rounds": rounds}))
    assert exp.load_reference(run, base).accuracy == ref.accuracy
    (run / "metrics.json").write_text(json.dumps({"config": config, "status": "completed", "rounds": rounds}))
    assert ref.asr is None and (ref.accuracy, ref.asr_floor, ref.wall_s) == pytest.approx((0.83, 0.17, 300.0))
    with pytest.raises(ExperimentError, match="differs in lr, seed"):
        exp.load_reference(run, exp.base_config(cli._text_parser().parse_args(["--data-dir", "d", "--seed", "1",
                                                                         "--lr", "2e-4"])))
    # the clean tune changes the model, so a tuned grid needs a tuned reference; BTU variants do not touch it
    with pytest.raises(ExperimentError, match="differs in repair, clean_set_size, repair_last_rounds"):
        exp.load_reference(run, exp.base_config(cli._text_parser().parse_args(["--data-dir", "d", "--clean-tune", "500"])))
    paper_tune = exp.base_config(cli._text_parser().parse_args(["--data-dir", "d", "--clean-tune", "500",
                                                           "--clean-tune-lr", "2e-5", "--clean-tune-batch", "64"]))
    assert (paper_tune.defense.repair_lr, paper_tune.defense.repair_batch_size, paper_tune.task.lr) == (2e-5, 64, 1e-4)
    with pytest.raises(ExperimentError, match="repair_last_rounds, repair_lr, repair_batch_size"):
        exp.load_reference(run, paper_tune)
    purity = exp.base_config(cli._text_parser().parse_args(["--data-dir", "d", "--btu-purity", "0.95"]))
    assert purity.defense.btu_purity == 0.95 and exp.load_reference(run, purity).accuracy == pytest.approx(0.83)
    freq = exp.base_config(cli._text_parser().parse_args(["--data-dir", "d", "--btu-ranking", "frequency"]))
    assert freq.defense.btu_ranking == "frequency" and exp.load_reference(run, freq).accuracy == pytest.approx(0.83)
    (run / "metrics.json").write_text(json.dumps({"config": config, "status": "completed", "rounds": rounds[:2]}))
    with pytest.raises(ExperimentError, match="did not complete"):
        exp.load_reference(run, base)
    (run / "metrics.json").write_text("{not json")
    with pytest.raises(ExperimentError, match="cannot read"):
        exp.load_reference(run, base)
    with pytest.raises(ExperimentError, match="cannot read"):
        exp.load_reference(tmp_path / "absent", base)


@pytest.mark.skipif(DATA is None or not (DATA / "sst2").is_dir(),
                    reason="needs the shared data folder with sst2/ (../shared/data or BASTIONFL_DATA_DIR)")
def test_quick_grid_writes_the_rows_it_ran(tmp_path: Path) -> None:
    results, work = tmp_path / "results.md", tmp_path / "work"
    rc = cli.text(["--quick", "--data-dir", str(DATA), "--only", "badnets/btu", "--results", str(results),
                   "--work-dir", str(work)])
    assert rc == 0
    table = _rows(results.read_text())[2:]
    assert [(r[0], r[1]) for r in table] == [("none", "none"), ("BadNets (`cf`)", "BTU")]
    reference = json.loads((work / "none-none" / "metrics.json").read_text())["rounds"][-1]
    assert "asr" not in reference and float(table[0][5]) == pytest.approx(100 * reference["asr_floor"], abs=0.006)
    assert 0 <= float(table[0][4]) <= 100  # the clean model's ASR on the BadNets-triggered sentences
    final = json.loads((work / "badnets-btu" / "metrics.json").read_text())["rounds"][-1]
    assert float(table[1][2]) == pytest.approx(100 * final["accuracy"], abs=0.006)
    assert float(table[1][4]) == pytest.approx(100 * final["asr"], abs=0.006)
    assert table[1][7].startswith(("0/1", "1/1"))  # the one poisoned client reports whether it flagged `cf`
    # a second grid reuses that reference instead of running it again
    again = tmp_path / "again.md"
    rc = cli.text(["--quick", "--data-dir", str(DATA), "--only", "badnets/none", "--results", str(again),
                   "--reference", str(work / "none-none"), "--work-dir", str(tmp_path / "work2")])
    assert rc == 0
    assert _rows(again.read_text())[2][:9] == table[0][:9] and "(`--reference`)" in again.read_text()
    assert not (tmp_path / "work2" / "none-none").exists()


def test_a_row_whose_rounds_lost_clients_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bastionfl.simulations.simulate as sim

    base = exp.base_config(cli._text_parser().parse_args(["--data-dir", "d"]))
    assert base.federation.stage_timeout_s == exp.STAGE_TIMEOUT_S  # a loaded machine must not drop slow clients
    rounds = [{"round": 1, "accuracy": 0.8, "asr": 0.2, "asr_floor": 0.2, "events": ["train: 2 node(s) failed or timed out"]}]
    monkeypatch.setattr(sim, "run_simulated", lambda cfg, run_dir, observer=None: rounds)
    with pytest.raises(ExperimentError, match="round 1: train: 2 node"):
        exp.run_arm(base, Arm("badnets", "btu"), tmp_path, None)
    rounds[0]["events"] = []
    assert exp.run_arm(base, Arm("badnets", "btu"), tmp_path, None).accuracy == 0.8
