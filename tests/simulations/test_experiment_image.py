"""``bastionfl experiment image``: the quick digits grid runs and writes the table; goal logic and errors."""

from __future__ import annotations

from bastionfl.cli import experiment as cli

import json
from pathlib import Path

import pytest

from bastionfl.config import RunConfig
from bastionfl.simulations import experiment_image as exp
from bastionfl.simulations.experiment_image import COLUMNS, Arm, ArmResult


def _table(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in rows]


def test_quick_grid_runs_and_writes_the_table(tmp_path: Path) -> None:
    results, work = tmp_path / "results.md", tmp_path / "work"
    rc = cli.image(["--quick", "--only", "badnets/none,badnets/finetune", "--results", str(results),
                   "--work-dir", str(work)])
    assert rc == 0
    text = results.read_text()
    assert "bastionfl experiment image --quick --only badnets/none,badnets/finetune" in text
    assert "Seed 0" in text and "Total wall time" in text and "load average" in text
    table = _table(text)
    assert tuple(table[0]) == COLUMNS
    body = table[2:]
    assert [(r[0], r[1]) for r in body] == [("none", "none"), ("BadNets", "none"), ("BadNets", "fine-tune")]
    assert body[0][2].startswith("no attack") and body[2][2].startswith("malicious")
    ref_ca = float(body[0][3])
    final = {}
    for name in ("none-none", "badnets-none", "badnets-finetune"):
        final[name] = json.loads((work / name / "metrics.json").read_text())["rounds"]
    # the table reports the final round of each federation, and the CA loss against the reference
    assert ref_ca == pytest.approx(100 * final["none-none"][-1]["accuracy"], abs=0.006)
    for row, name in ((body[1], "badnets-none"), (body[2], "badnets-finetune")):
        assert float(row[3]) == pytest.approx(100 * final[name][-1]["accuracy"], abs=0.006)
        assert float(row[4]) == pytest.approx(100 * final[name][-1]["asr"], abs=0.006)
        assert float(row[5]) == pytest.approx(ref_ca - float(row[3]), abs=0.011)
    # the repair arm branched from the no-defense federation after round 1 and repaired only in round 2
    assert final["badnets-finetune"][0]["accuracy"] == final["badnets-none"][0]["accuracy"]
    assert "repair" not in final["badnets-finetune"][0] and final["badnets-finetune"][1]["repair_s"] > 0
    assert body[1][6] == "-" and (body[2][6] == "**yes**" or body[2][6].startswith("no ("))


def _result(attack: str, defense: str, ca: float, asr: float | None) -> ArmResult:
    return ArmResult(Arm(attack, defense), ca, asr, 12.0)


def test_goal_needs_both_asr_and_ca_and_ignores_the_undefended_row() -> None:
    ref = _result("none", "none", 0.85, None)
    rows = [_result("badnets", "none", 0.84, 0.01),  # the attack failed: not a defense success
            _result("badnets", "nad", 0.83, 0.05),  # exactly on both bars
            _result("badnets", "finetune", 0.829, 0.01),  # CA loss 2.1 points
            _result("blended", "rnp", 0.85, 0.051)]  # ASR above 5 %
    text = exp.render_results(RunConfig(), ref, rows, command="bastionfl experiment image --quick",
                              total_wall_s=75.0, load=(1.0, 2.0, 3.0), cores=2, shared_prefix=True)
    goal = {(r[0], r[1]): r[6] for r in _table(text)[2:]}
    assert goal[("BadNets", "none")] == "-"
    assert goal[("BadNets", "NAD")] == "**yes**"
    assert goal[("BadNets", "fine-tune")] == "no (CA)"
    assert goal[("Blended", "RNP")] == "no (ASR)"
    assert "* BadNets: met by NAD." in text and "* Blended: not met by any defense run." in text


def test_threat_models_per_row() -> None:
    assert len(exp.grid_arms()) == 14  # BadNets, Blended x 5 defenses, Boosted x 4: unlearn and fineprune are opt-in
    assert not {"badnets/unlearn", "blended/fineprune"} & {a.key for a in exp.select_arms(None)}
    assert [a.key for a in exp.select_arms("badnets/unlearn")] == ["badnets/unlearn"]
    assert [a.key for a in exp.select_arms("fineprune")] == ["badnets/fineprune", "blended/fineprune"]
    arms = {a.key: a for a in exp.grid_arms(opt_in=True)}
    assert len(arms) == 19  # with the opt-in unlearning and fine-pruning rows
    assert arms["badnets/abl"].overrides() == {"attack": "badnets", "client_defense": "abl", "repair": "none",
                                               "poisoned_clients_defend": True}
    for d in ("rnp", "nad", "finetune", "unlearn", "fineprune"):
        o = arms[f"blended/{d}"].overrides()
        assert o["poisoned_clients_defend"] is False and o["client_defense"] == "none" and o["repair"] == d
    assert [a.key for a in exp.select_arms("*/nad,blended/abl")] == ["badnets/nad", "blended/abl", "blended/nad"]


def test_missing_data_dir_is_one_clear_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.image([]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--data-dir is required" in err
    assert cli.image(["--data-dir", str(tmp_path / "absent")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert cli.image(["--quick", "--only", "nothing/here"]) == 2
    assert "selects no row" in capsys.readouterr().err


def test_repair_set_reaches_the_repair_rows_it_names_and_bad_items_are_one_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    sets = exp.parse_repair_set(["fineprune_max_drop=20", "repair-epochs=3"])
    assert sets == {"fineprune_max_drop": "20", "repair_epochs": "3"}
    assert exp.repair_overrides(Arm("blended", "fineprune"), sets) == sets
    assert exp.repair_overrides(Arm("blended", "finetune"), sets) == {"repair_epochs": "3"}
    assert exp.repair_overrides(Arm("blended", "none"), sets) == {}
    for bad, says in ((["fineprune_max_drop"], "KEY=VALUE"), (["lr=0.1"], "not a repair key"),
                      (["repair_last_rounds=2"], "not a repair key"), (["fineprune_max_drop=0"], "fineprune_max_drop"),
                      (["fineprune_max_fraction=x"], "fineprune_max_fraction"),
                      (["rnp_max_threshold=0.5"], "no selected row")):
        assert cli.image(["--quick", "--only", "badnets/fineprune", "--repair-set", *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and says in err, err


def test_failed_arm_is_reported_with_its_label(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import bastionfl.simulations.simulate as simulate

    def fails(cfg: RunConfig, *args: object, **kwargs: object) -> list[dict[str, object]]:
        if cfg.secure.mode == "xmkckks":
            raise RuntimeError("stage key_setup timed out")
        return [{"round": 1, "accuracy": 0.5, "loss": 1.0, "time_s": 1.0}]

    monkeypatch.setattr(simulate, "run_simulated", fails)
    rc = cli.image(["--quick", "--only", "badnets/none", "--secure-aggregation", "xmkckks",
                   "--results", str(tmp_path / "r.md")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "run failed" in err and "key_setup timed out" in err and "Traceback" not in err
    assert not (tmp_path / "r.md").exists()


def test_boosted_clip_and_he_rows() -> None:
    base = RunConfig.build(num_clients=10, rounds=8)
    arms = {a.key: a for a in exp.grid_arms(he_rows=True, opt_in=True)}
    boosted = arms["boosted/none"].overrides(base)
    assert (boosted["attack"], boosted["boost_factor"], boosted["attack_start_round"]) == (
        "badnets", exp.BOOSTED["boost_factor"], 8 - exp.BOOSTED["rounds"] + 1)
    assert arms["boosted/clip"].overrides(base)["aggregate_clip_adaptive"] == exp.CLIP_ADAPTIVE
    he = arms["boosted/clip+he"].overrides(base)
    assert he["secure_aggregation"] == "xmkckks" and "boosted/none+he" in arms and "badnets/finetune+he" in arms
    assert [a.key for a in exp.select_arms("boosted/*+he", he_rows=True)] == ["boosted/none+he", "boosted/clip+he",
                                                                              "boosted/unlearn+he"]
    assert arms["boosted/unlearn+he"].overrides(base)["repair"] == "unlearn"


def test_seeds_table_shows_mean_and_std_and_the_working_attack_bar() -> None:
    from bastionfl.simulations.experiment_image_seeds import render_seeds

    per_seed = []
    for ca, asr_none, asr_ft in ((0.90, 0.95, 0.02), (0.92, 0.97, 0.04)):
        per_seed.append((_result("none", "none", ca, None),
                         [_result("badnets", "none", ca, asr_none), _result("badnets", "finetune", ca - 0.01, asr_ft),
                          _result("blended", "none", ca, 0.5), _result("blended", "nad", ca, 0.0),
                          _result("boosted", "none", ca - 0.03, 1.0)]))  # ASR 100 % but 3 points of CA lost
    text = render_seeds(RunConfig(), per_seed, [0, 1], command="c", total_wall_s=10.0, load=(1, 1, 1), cores=2)
    rows = {(r[0], r[1]): r for r in _table(text)[2:]}
    assert rows[("BadNets", "none")][4] == "96.00 ± 1.00" and rows[("none", "none")][3] == "91.00 ± 1.00"
    assert rows[("BadNets", "fine-tune")][6] == "**yes**"
    assert "* BadNets: undefended attack works; goal met by fine-tune." in text
    assert "* Blended: undefended attack does NOT reach the working-attack bar (ASR below 90 %)" in text
    assert "Blended: undefended attack does NOT reach the working-attack bar (ASR below 90 %), so no defense result " \
           "counts; (met by the figures alone: NAD)." in text
    assert "* Boosted BadNets: undefended attack does NOT reach the working-attack bar (CA more than 2 points below " \
           "the no-attack run)" in text


def test_blended_arms_carry_their_own_poisoning() -> None:
    from bastionfl.cli.experiment import _image_parser

    args = _image_parser().parse_args(["--quick", "--rounds", "5"])
    base = exp.base_config(args)
    runner = exp._Runner(base, Path("unused"), None)
    arms = {a.key: a for a in exp.grid_arms(he_rows=True, opt_in=True)}
    for key in ("blended/none", "blended/finetune", "blended/nad", "blended/abl", "blended/none+he"):
        atk = runner._cfg(arms[key], Path("unused")).attack
        assert (str(atk.kind), atk.blend_alpha, atk.poison_rate) == (
            "blended", exp.BLENDED["blend_alpha"], exp.BLENDED["poison_rate"]), key
    # the other attacks keep the grid's (BadNets) or their own (boosted) poison rate
    assert runner._cfg(arms["badnets/none"], Path("unused")).attack.poison_rate == base.attack.poison_rate
    assert runner._cfg(arms["boosted/none"], Path("unused")).attack.poison_rate == exp.BOOSTED["poison_rate"]
    text = exp.render_results(base, _result("none", "none", 0.9, None), [_result("blended", "none", 0.9, 0.95)],
                              command="c", total_wall_s=1.0, load=(1, 1, 1), cores=2, shared_prefix=False)
    assert f"Blended: {100 * exp.BLENDED['poison_rate']:.0f}%, alpha {exp.BLENDED['blend_alpha']:g}" in text
