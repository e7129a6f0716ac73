"""The typed run configuration: defaults, TOML, overrides, and one-line errors naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bastionfl.config import ConfigError, RunConfig, apply_overrides, from_run_config, load_config, parse_set


def test_defaults_are_a_small_offline_run() -> None:
    cfg = RunConfig()
    assert (cfg.task.dataset, cfg.federation.num_clients, cfg.secure.mode) == ("digits", 5, "none")
    assert cfg.federation.rounds >= 5


def test_overrides_coerce_strings_to_field_types() -> None:
    cfg = apply_overrides(RunConfig(), parse_set(["rounds=7", "lr=0.1", "verbose=true", "partition=dirichlet"]))
    assert (cfg.federation.rounds, cfg.task.lr, cfg.runtime.verbose, cfg.federation.partition) == (7, 0.1, True, "dirichlet")


@pytest.mark.parametrize(
    ("values", "key", "fragment"),
    [
        ({"no_such_key": "1"}, "no_such_key", "unknown"),
        ({"rounds": "many"}, "rounds", "expected int"),
        ({"rounds": "0"}, "rounds", ">= 1"),
        ({"lr": "-0.5"}, "lr", "> 0.0"),
        ({"fraction_train": "1.5"}, "fraction_train", "<= 1.0"),
        ({"dataset": "imagenet"}, "dataset", "one of"),
        ({"verbose": "maybe"}, "verbose", "expected bool"),
        ({"rounds": 2.5}, "rounds", "expected int"),
        ({"rounds": True}, "rounds", "expected int"),
    ],
)
def test_bad_values_name_the_key(values: dict[str, object], key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(RunConfig(), values)
    message = str(info.value)
    assert key in message and fragment in message and "\n" not in message


def test_toml_file_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('rounds = 3\ndataset = "digits"\nlr = 1\n')
    cfg = load_config(path, {"rounds": "4"})
    assert (cfg.federation.rounds, cfg.task.lr) == (4, 1.0)


def test_toml_errors_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("rounds = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    wrong_type = tmp_path / "wrong.toml"
    wrong_type.write_text('rounds = "three"\n')
    with pytest.raises(ConfigError, match="'rounds'"):
        load_config(wrong_type)


def test_flower_run_config_maps_onto_the_same_fields() -> None:
    cfg = from_run_config({"num-server-rounds": 9, "num-clients": 3, "secure-aggregation": "xmkckks"})
    assert (cfg.federation.rounds, cfg.federation.num_clients, cfg.secure.mode) == (9, 3, "xmkckks")
    with pytest.raises(ConfigError, match="'num-rounds'"):
        from_run_config({"num-rounds": 3})


def test_pyproject_run_config_lists_every_key_at_its_default() -> None:
    import tomllib

    data = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    section = data["tool"]["flwr"]["app"]["config"]
    assert from_run_config(section) == RunConfig()  # every field present there, with the same default
    expected = {("num-server-rounds" if k == "rounds" else k.replace("_", "-")): v for k, v in RunConfig().flat().items()}
    assert section == expected


@pytest.mark.parametrize("args", [["--set", "rounds=0"], ["--set", "bogus=1"], ["--set", "rounds"]])
def test_cli_exits_2_with_one_line(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "bastionfl.cli.main", "simulate", *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr


def test_cli_missing_dataset_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "bastionfl.cli.main", "simulate", "--set",
                           "dataset=fashion-mnist", "--set", f"data_dir={tmp_path}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert str(tmp_path) in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"dataset": "sst2", "model": "cnn"}, "model"),  # an image model on a text dataset
        ({"model": "minilm"}, "model"),  # digits needs an image model
        ({"attack": "addsent"}, "attack"),
        ({"client_defense": "btu"}, "client_defense"),
        ({"dataset": "sst2", "client_defense": "abl"}, "client_defense"),
        ({"dataset": "sst2", "lr": 0.05}, "lr"),  # an SGD rate would make AdamW diverge
        ({"dataset": "sst2", "repair": "nad", "clean_set_size": 100}, "repair"),  # image repairs only
        ({"dataset": "sst2", "repair": "rnp", "clean_set_size": 100}, "repair"),
        ({"rounds": 3, "repair_last_rounds": 4}, "repair_last_rounds"),
        ({"btu_purity": 1.5}, "btu_purity"),
        ({"repair_lr": 2e-5}, "repair_lr"),  # the text clean tune's lr, on an image run
        ({"repair_lr_decay": "true"}, "repair_lr_decay"),  # text clean tune only
        ({"dataset": "sst2", "repair_batch_size": 64}, "repair_lr"),  # no tune
        ({"dataset": "sst2", "repair": "finetune", "clean_set_size": 100, "repair_lr": 0.5}, "repair_lr"),
        ({"repair": "rnp"}, "clean_set_size"),  # a repair without a clean set has nothing to learn from
        ({"repair": "nad", "clean_set_size": 5}, "clean_set_size"),
        ({"repair": "finetune", "clean_set_size": 150}, "clean_set_size"),  # 75 validation images: 1.33-point steps
        ({"attack": "badnets", "poisoned_clients": 6}, "poisoned_clients"),  # more than the 5 clients
        ({"auth": "pseudonym", "auth_ha_url": "https://ha:8443"}, "auth_ha_token_file"),
        ({"auth": "pseudonym", "auth_ha_url": "http://ha:8443", "auth_ha_token_file": "t"}, "auth_ha_url"),
        ({"secure_aggregation": "paillier"}, "secure_aggregation"),
    ],
)
def test_cross_field_checks_name_the_key(values: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}'") as info:
        apply_overrides(RunConfig(), values)
    assert "\n" not in str(info.value)


def test_the_validation_part_must_resolve_the_allowed_repair_drop() -> None:
    for size, drop in ((200, 1.0), (150, 1.5), (100, 2.0), (40, 0.0)):  # 100, 75, 50, 20 images validate
        apply_overrides(RunConfig(), {"repair": "finetune", "clean_set_size": size, "repair_max_ca_drop": drop})
    with pytest.raises(ConfigError, match="75 validation images cannot resolve repair_max_ca_drop 1.0"):
        apply_overrides(RunConfig(), {"repair": "nad", "clean_set_size": 150})
    with pytest.raises(ConfigError, match="'clean_set_size'"):
        apply_overrides(RunConfig(), {"repair": "rnp", "clean_set_size": 300, "repair_val_fraction": 0.3})
    assert apply_overrides(RunConfig(), {"clean_set_size": 150}).defense.clean_set_size == 150  # no repair: no check
    text = apply_overrides(RunConfig(), {"dataset": "sst2", "repair": "finetune", "clean_set_size": 40})
    assert text.defense.repair_val_fraction == 0  # the text clean tune validates nothing, so nothing to resolve


def test_a_text_dataset_alone_takes_the_text_task_defaults() -> None:
    cfg = apply_overrides(RunConfig(), {"dataset": "sst2"})
    assert (cfg.task.model, cfg.task.lr, cfg.task.batch_size, cfg.task.text_layers, cfg.federation.rounds) == (
        "minilm", 1e-4, 16, 0, 3)
    given = apply_overrides(RunConfig(), {"dataset": "sst2", "rounds": 7, "lr": 2e-5})
    assert (given.federation.rounds, given.task.lr, given.task.model) == (7, 2e-5, "minilm")  # given values stay
    back = apply_overrides(cfg, {"dataset": "digits"})
    assert (back.task.model, back.task.lr, back.federation.rounds) == ("cnn", 0.05, 5)
    assert from_run_config({"dataset": "sst2", "model": "cnn", "lr": 0.05}).task.model == "minilm"  # at defaults


def test_text_configuration_is_accepted() -> None:
    cfg = apply_overrides(RunConfig(), {"dataset": "sst2", "model": "minilm", "attack": "syntactic",
                                        "client_defense": "btu", "lr": 1e-4})
    assert cfg.task.dataset == "sst2" and cfg.kind == "text"


def test_text_clean_tune_and_last_round_repair_are_accepted() -> None:
    cfg = apply_overrides(RunConfig(), {"dataset": "sst2", "model": "minilm", "lr": 1e-4, "repair": "finetune",
                                        "clean_set_size": 500, "repair_last_rounds": 1, "btu_purity": 0.95,
                                        "repair_lr": 2e-5, "repair_batch_size": 64})
    d = cfg.defense
    assert (d.repair, d.clean_set_size, d.repair_last_rounds, d.btu_purity) == ("finetune", 500, 1, 0.95)
    assert (d.repair_lr, d.repair_batch_size) == (2e-5, 64)


def test_sections_dotted_keys_and_toml_tables_reach_the_same_fields(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('[federation]\nrounds = 3\nnum_clients = 4\n\n[secure]\nsecure_aggregation = "xmkckks"\n')
    cfg = load_config(path, {"federation.seed": "7", "he-profile": "lean"})
    assert (cfg.federation.rounds, cfg.federation.num_clients, cfg.federation.seed) == (3, 4, 7)
    assert (cfg.secure.mode, cfg.secure.he_profile) == ("xmkckks", "lean")
    with pytest.raises(ConfigError, match="'rounds'"):
        apply_overrides(RunConfig(), {"task": {"rounds": 3}})  # rounds lives in [federation]
    with pytest.raises(ConfigError, match="'task.rounds'"):
        apply_overrides(RunConfig(), {"task.rounds": 3})


def test_modes_are_enums_and_the_saved_form_reads_back() -> None:
    from bastionfl.config import SecureAggregation, from_saved

    cfg = RunConfig.build(secure_aggregation="xmkckks", attack="badnets", poisoned_clients=1)
    assert cfg.secure.mode is SecureAggregation.XMKCKKS
    assert from_saved(cfg.to_dict()) == cfg
    assert from_saved(cfg.flat()) == cfg
    legacy = {**RunConfig().flat(), "threat": "malicious"}  # written before poisoned_clients_defend existed
    del legacy["poisoned_clients_defend"]
    assert from_saved(legacy).attack.poisoned_clients_defend is False


def test_clients_are_sent_only_what_they_need() -> None:
    from bastionfl.config import client_values, from_client_values

    cfg = RunConfig.build(auth="pseudonym", auth_ha_url="https://ha.example:8443", auth_ha_token_file="/srv/token",
                          auth_ha_ca="/srv/ca.pem", auth_ha_db="/srv/ha.sqlite", out_dir="/srv/runs",
                          repair="rnp", clean_set_size=200, secure_aggregation="xmkckks")
    sent = client_values(cfg)
    for secret in ("auth_ha_url", "auth_ha_token_file", "auth_ha_ca", "auth_ha_db", "out_dir", "repair"):
        assert secret not in sent
    assert not any("/srv" in str(v) for v in sent.values())
    assert sent["clean_set_size"] == 200 and sent["secure_aggregation"] == "xmkckks"  # clients leave the clean set out
    view = from_client_values(sent)
    assert view.task == cfg.task and view.attack == cfg.attack and view.secure == cfg.secure
    with pytest.raises(ConfigError, match="server-side"):
        from_client_values({**sent, "auth_ha_token_file": "/srv/token"})


def test_rnp_keys_reach_rnp_and_are_refused_without_it() -> None:
    from bastionfl.server.repair import RepairSchedule

    keys = {"rnp_prune_by": "number", "rnp_max_threshold": 0.5, "rnp_max_pruned_fraction": 0.1,
            "rnp_unlearn_stop_acc": 0.3, "rnp_unlearn_max_epochs": 40, "rnp_recover_lr": 0.1}
    cfg = apply_overrides(RunConfig(), {"repair": "rnp", "clean_set_size": 200, **keys})
    assert RepairSchedule.of(cfg).rnp == {k.removeprefix("rnp_"): v for k, v in keys.items()}
    for key, value in keys.items():
        with pytest.raises(ConfigError, match=f"'{key}'.*repair = finetune"):
            apply_overrides(RunConfig(), {"repair": "finetune", "clean_set_size": 200, key: value})
    for key, value in [("rnp_prune_by", "count"), ("rnp_max_threshold", 1.5), ("rnp_max_pruned_fraction", -0.1),
                       ("rnp_unlearn_stop_acc", 2.0), ("rnp_unlearn_max_epochs", 0), ("rnp_recover_lr", 0.0)]:
        with pytest.raises(ConfigError, match=f"'{key}'"):
            apply_overrides(RunConfig(), {"repair": "rnp", "clean_set_size": 200, key: value})


def test_fineprune_keys_reach_the_repair_and_bad_values_are_one_line_errors() -> None:
    from bastionfl.server.repair import RepairSchedule

    cfg = apply_overrides(RunConfig(), {"repair": "fineprune", "clean_set_size": 200, "fineprune_max_drop": 20.0,
                                        "fineprune_max_fraction": 0.5})
    assert RepairSchedule.of(cfg).fineprune == {"max_drop": 20.0, "max_fraction": 0.5}
    for key, value in (("fineprune_max_drop", 20.0), ("fineprune_max_fraction", 0.5)):
        with pytest.raises(ConfigError, match=f"'{key}'.*repair = finetune"):
            apply_overrides(RunConfig(), {"repair": "finetune", "clean_set_size": 200, key: value})
    for key, value in (("fineprune_max_drop", 0.0), ("fineprune_max_drop", 100.5), ("fineprune_max_fraction", 0.0),
                       ("fineprune_max_fraction", 1.0)):
        with pytest.raises(ConfigError, match=f"'{key}'") as err:
            apply_overrides(RunConfig(), {"repair": "fineprune", "clean_set_size": 200, key: value})
        assert "\n" not in str(err.value)
