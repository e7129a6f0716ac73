"""The typed run configuration: defaults, TOML, overrides, and one-line errors naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bastionfl.config import ConfigError, RunConfig, apply_overrides, from_run_config, load_config, parse_set


def test_defaults_are_a_small_offline_run() -> None:
    cfg = RunConfig()
    assert (cfg.dataset, cfg.num_clients, cfg.secure_aggregation) == ("digits", 5, "none")
    assert cfg.rounds >= 5


def test_overrides_coerce_strings_to_field_types() -> None:
    cfg = apply_overrides(RunConfig(), parse_set(["rounds=7", "lr=0.1", "verbose=true", "partition=dirichlet"]))
    assert (cfg.rounds, cfg.lr, cfg.verbose, cfg.partition) == (7, 0.1, True, "dirichlet")


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
    assert (cfg.rounds, cfg.lr) == (4, 1.0)


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
    assert (cfg.rounds, cfg.num_clients, cfg.secure_aggregation) == (9, 3, "xmkckks")
    with pytest.raises(ConfigError, match="'num-rounds'"):
        from_run_config({"num-rounds": 3})


def test_pyproject_run_config_is_valid() -> None:
    import tomllib

    data = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    section = data["tool"]["flwr"]["app"]["config"]
    assert from_run_config(section) == RunConfig()  # every field present there, with the same default
    assert len(section) == len(RunConfig().to_dict())


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
        ({"dataset": "sst2"}, "model"),  # the default cnn is an image model
        ({"model": "minilm"}, "model"),  # digits needs an image model
        ({"attack": "addsent"}, "attack"),
        ({"client_defense": "btu"}, "client_defense"),
        ({"dataset": "sst2", "model": "minilm", "client_defense": "abl", "lr": 1e-4}, "client_defense"),
        ({"dataset": "sst2", "model": "minilm"}, "lr"),  # the SGD default 0.05 would make AdamW diverge
        ({"dataset": "sst2", "model": "minilm", "lr": 1e-4, "repair": "nad"}, "repair"),  # image repairs only
        ({"dataset": "sst2", "model": "minilm", "lr": 1e-4, "repair": "rnp"}, "repair"),
        ({"rounds": 3, "repair_last_rounds": 4}, "repair_last_rounds"),
        ({"btu_purity": 1.5}, "btu_purity"),
        ({"repair_lr": 2e-5}, "repair_lr"),  # the text clean tune's lr, on an image run
        ({"repair_lr_decay": "true"}, "repair_lr"),
        ({"dataset": "sst2", "model": "minilm", "lr": 1e-4, "repair_batch_size": 64}, "repair_lr"),  # no tune
        ({"dataset": "sst2", "model": "minilm", "lr": 1e-4, "repair": "finetune", "repair_lr": 0.5}, "repair_lr"),
    ],
)
def test_cross_field_checks_name_the_key(values: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}'"):
        apply_overrides(RunConfig(), values)


def test_text_configuration_is_accepted() -> None:
    cfg = apply_overrides(RunConfig(), {"dataset": "sst2", "model": "minilm", "attack": "syntactic",
                                        "client_defense": "btu", "lr": 1e-4})
    assert cfg.dataset == "sst2"


def test_text_clean_tune_and_last_round_repair_are_accepted() -> None:
    cfg = apply_overrides(RunConfig(), {"dataset": "sst2", "model": "minilm", "lr": 1e-4, "repair": "finetune",
                                        "clean_set_size": 500, "repair_last_rounds": 1, "btu_purity": 0.95,
                                        "repair_lr": 2e-5, "repair_batch_size": 64})
    assert (cfg.repair, cfg.clean_set_size, cfg.repair_last_rounds, cfg.btu_purity) == ("finetune", 500, 1, 0.95)
    assert (cfg.repair_lr, cfg.repair_batch_size) == (2e-5, 64)
