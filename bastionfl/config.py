"""One typed run configuration for BastionFL, shared by the CLI, the ServerApp and Flower's run_config.

Sources, later ones win: the defaults below, a TOML file, ``--set key=value`` overrides. Flower's
run_config (``[tool.flwr.app.config]``, ``flwr run -c``) maps onto the same fields: dashes become
underscores and ``num-server-rounds`` is an alias of ``rounds``. Every bad key or value raises
``ConfigError`` with a one-line message naming the key.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = ["RunConfig", "ConfigError", "load_config", "apply_overrides", "from_run_config", "FIELD_HELP"]


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names the key."""


def _choice(*options: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v in options else f"must be one of {', '.join(options)}"

    return check


def _range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if lo is not None and (v <= lo if lo_open else v < lo):
            return f"must be {'>' if lo_open else '>='} {lo}"
        if hi is not None and v > hi:
            return f"must be <= {hi}"
        return None

    return check


def _spec(default: Any, help_text: str, check: Callable[[Any], str | None] | None = None) -> Any:
    return field(default=default, metadata={"help": help_text, "check": check})


@dataclass
class RunConfig:
    """Every knob of a BastionFL run, with its default (a small, fast federation on embedded data)."""

    # task and data
    dataset: str = _spec("digits", "digits | fashion-mnist | mnist | cifar10 (images); sst2 | hsol (text)",
                         _choice("digits", "fashion-mnist", "mnist", "cifar10", "sst2", "hsol"))
    data_dir: str = _spec("", "folder holding the dataset files (IDX for (fashion-)mnist); empty: standard loader")
    model: str = _spec("cnn", "cnn | wrn-16-1 | wrn-16-4 (images); minilm | tiny-bert | a Hugging Face model id (text)")
    text_layers: int = _spec(2, "text: keep the first N transformer layers (0: all)", _range(0, 48))
    max_len: int = _spec(48, "text: tokens per sentence", _range(8, 512))
    train_subset: int = _spec(0, "use only the first N training examples after shuffling (0: all)", _range(0))
    # federation
    num_clients: int = _spec(5, "number of simulated clients (SuperNodes)", _range(1, 1000))
    rounds: int = _spec(5, "number of federated rounds", _range(1, 100000))
    fraction_train: float = _spec(1.0, "share of clients sampled per round", _range(0.0, 1.0, lo_open=True))
    partition: str = _spec("iid", "iid | dirichlet", _choice("iid", "dirichlet"))
    alpha: float = _spec(0.5, "Dirichlet concentration (partition = dirichlet)", _range(0.0, None, lo_open=True))
    seed: int = _spec(0, "seed for partitioning, sampling, initialisation and training", _range(0))
    # local training
    local_epochs: int = _spec(1, "local epochs per round", _range(1, 1000))
    batch_size: int = _spec(32, "local batch size", _range(1, 100000))
    lr: float = _spec(0.05, "local learning rate: SGD for images; AdamW (about 1e-4, at most 0.01) for text", _range(0.0, 10.0, lo_open=True))
    momentum: float = _spec(0.9, "local SGD momentum", _range(0.0, 1.0))
    # secure aggregation
    secure_aggregation: str = _spec("none", "none | xmkckks", _choice("none", "xmkckks"))
    he_profile: str = _spec("precise", "xMK-CKKS parameter profile: precise | lean", _choice("precise", "lean"))
    key_epoch_rounds: int = _spec(10, "start a new key epoch every K rounds (and when participants change)", _range(1))
    stage_timeout_s: float = _spec(600.0, "seconds to wait for replies in one stage", _range(0.0, None, lo_open=True))
    # backdoor attacks and defenses
    attack: str = _spec("none", "data-poisoning backdoor: none | badnets | blended (images); badnets (rare word) | "
                        "addsent | syntactic | style (text)",
                        _choice("none", "badnets", "blended", "addsent", "syntactic", "style"))
    poisoned_clients: int = _spec(0, "how many clients hold poisoned data (a seeded choice)", _range(0))
    poison_rate: float = _spec(0.1, "share of a poisoned client's examples that carry the trigger", _range(0.0, 1.0))
    target_label: int = _spec(0, "the attack's target class", _range(0))
    threat: str = _spec("honest", "honest: poisoned clients still run their defense | malicious: they do not",
                        _choice("honest", "malicious"))
    client_defense: str = _spec("none", "defense in local training: none | abl (images) | btu (text)",
                                _choice("none", "abl", "btu"))
    repair: str = _spec("none", "server-side repair of the global model: none | rnp | nad | finetune (text: finetune "
                        "only, BTU's clean tune: one AdamW epoch at lr)", _choice("none", "rnp", "nad", "finetune"))
    clean_set_size: int = _spec(0, "server's clean set for repair, held out of the clients' training data (text: "
                                "drawn from the test split)", _range(0))
    repair_last_rounds: int = _spec(0, "run the server repair only in the last K rounds (0: every round)", _range(0))
    repair_lr: float = _spec(0.0, "learning rate of the text clean tune (0: the run's lr; BTU's paper: 2e-5)",
                             _range(0.0, 0.01))
    repair_lr_decay: bool = _spec(False, "text clean tune: lr falls linearly to 0 over the epoch (not in the paper, "
                                  "which keeps it constant)")
    repair_batch_size: int = _spec(0, "batch size of the text clean tune (0: the run's batch_size; BTU's paper: 64)",
                                   _range(0))
    btu_cut_to: str = _spec("pad", "BTU's replacement for a flagged token's moved dims: pad (the paper) | own (the "
                            "token's own pretrained values; keeps its meaning, and lets the backdoor back in)",
                            _choice("pad", "own"))
    btu_purity: float = _spec(0.0, "BTU variant: cut only suspects whose sentences in the client's data carry one "
                              "label at least this share of the time, e.g. 0.95 (0: off, the paper)", _range(0.0, 1.0))
    btu_hold: bool = _spec(False, "BTU in later rounds: cut the received model first and keep the cut rows fixed "
                                  "while training (the rest of the model adapts to them)")
    # pseudonym admission (Home Authority)
    auth: str = _spec("none", "admission of clients: none | pseudonym (5G-style one-time pseudonyms via a Home Authority)",
                      _choice("none", "pseudonym"))
    auth_server_id: str = _spec("fl-server", "this FL server's id at the Home Authority")
    auth_ha_url: str = _spec("", "Home Authority service URL (deployment); empty: an in-process HA (simulation)")
    auth_ha_token_file: str = _spec("", "file with this FL server's bearer token for the HA service")
    auth_ha_ca: str = _spec("", "CA certificate that signed the HA service's TLS certificate")
    auth_ha_db: str = _spec("", "in-process HA database (simulation); empty: <out_dir>/auth/ha.sqlite")
    auth_cred_dir: str = _spec("", "simulation: folder of client credential files cred-<partition-id>.json "
                               "(empty: <out_dir>/auth); deployment nodes use --node-config auth-cred=FILE")
    # testing aids
    inject_dropout: str = _spec("", "make a client fail once: '<stage>:<round>:<partition-id>' (stage: keygen, "
                                "train, decrypt); for dropout tests")
    # runtime
    out_dir: str = _spec("", "where metrics.json, the plot and checkpoints go (flwr run default: ./runs/flwr-<run id>)")
    threads_per_client: int = _spec(1, "torch threads per ClientApp", _range(1, 64))
    verbose: bool = _spec(False, "show Flower's and Ray's own logs")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (TOML- and JSON-serialisable)."""
        return dataclasses.asdict(self)


FIELD_HELP: dict[str, str] = {f.name: f.metadata["help"] for f in fields(RunConfig)}
_FIELDS = {f.name: f for f in fields(RunConfig)}
_ALIASES = {"num_server_rounds": "rounds"}


_IMAGE_MODELS = ("cnn", "wrn-16-1", "wrn-16-4")
TEXT_DATASETS = ("sst2", "hsol")  # the text task; every other dataset is an image task


def _cross_check(cfg: "RunConfig") -> None:
    """Checks that span fields: the model fits the task, attack and defense fit the modality."""
    text = cfg.dataset in TEXT_DATASETS
    if not text and cfg.model not in _IMAGE_MODELS:
        raise ConfigError(f"config key 'model': image datasets need one of {', '.join(_IMAGE_MODELS)}, got {cfg.model!r}")
    if text and cfg.model in _IMAGE_MODELS:
        raise ConfigError(f"config key 'model': dataset {cfg.dataset} needs a text model (minilm, tiny-bert or a "
                          f"Hugging Face id), got {cfg.model!r}")
    if not text and cfg.attack in ("addsent", "syntactic", "style"):
        raise ConfigError(f"config key 'attack': {cfg.attack} is a text attack, dataset is {cfg.dataset}")
    if text and cfg.attack == "blended":
        raise ConfigError(f"config key 'attack': blended is an image attack, dataset is {cfg.dataset}")
    if text and cfg.lr > 0.01:
        raise ConfigError(f"config key 'lr': text models train with AdamW, where lr {cfg.lr} diverges; use about "
                          "1e-4 (the image default 0.05 is an SGD rate)")
    if text and cfg.repair in ("rnp", "nad"):
        raise ConfigError(f"config key 'repair': {cfg.repair} repairs image models; text runs take none or finetune "
                          "(BTU's clean tune)")
    if cfg.repair_last_rounds > cfg.rounds:
        raise ConfigError(f"config key 'repair_last_rounds': {cfg.repair_last_rounds} is more than the "
                          f"{cfg.rounds} rounds")
    if (cfg.repair_lr or cfg.repair_batch_size or cfg.repair_lr_decay) and not (text and cfg.repair == "finetune"):
        raise ConfigError("config keys 'repair_lr' / 'repair_lr_decay' / 'repair_batch_size' set the text clean "
                          f"tune (text dataset, repair = finetune); this run has dataset {cfg.dataset}, "
                          f"repair {cfg.repair}")
    if (cfg.client_defense == "abl" and text) or (cfg.client_defense == "btu" and not text):
        raise ConfigError(f"config key 'client_defense': {cfg.client_defense} does not apply to {cfg.dataset}")


def _coerce(key: str, raw: Any, typ: type) -> Any:
    """Convert ``raw`` (a TOML value or an override string) to the field's type, or raise ConfigError."""
    if isinstance(raw, str) and typ is not str:
        text = raw.strip()
        try:
            if typ is bool:
                if text.lower() in ("true", "1", "yes", "on"):
                    return True
                if text.lower() in ("false", "0", "no", "off"):
                    return False
                raise ValueError
            return typ(text)
        except ValueError:
            raise ConfigError(f"config key '{key}': expected {typ.__name__}, got {raw!r}") from None
    if typ is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if typ is bool and not isinstance(raw, bool):
        raise ConfigError(f"config key '{key}': expected bool, got {raw!r}")
    if typ is int and (isinstance(raw, bool) or not isinstance(raw, int)):
        raise ConfigError(f"config key '{key}': expected int, got {raw!r}")
    if typ is float and not isinstance(raw, float):
        raise ConfigError(f"config key '{key}': expected float, got {raw!r}")
    if typ is str and not isinstance(raw, str):
        raise ConfigError(f"config key '{key}': expected str, got {raw!r}")
    return raw


def _canonical(key: str) -> str:
    name = key.strip().replace("-", "_")
    return _ALIASES.get(name, name)


def apply_overrides(cfg: RunConfig, values: Mapping[str, Any]) -> RunConfig:
    """Return a copy of ``cfg`` with ``values`` applied and validated (unknown keys are errors)."""
    updates: dict[str, Any] = {}
    for key, raw in values.items():
        name = _canonical(key)
        if name not in _FIELDS:
            raise ConfigError(f"unknown config key '{key}' (known: {', '.join(sorted(_FIELDS))})")
        typ = {"str": str, "int": int, "float": float, "bool": bool}[str(_FIELDS[name].type)]
        value = _coerce(key, raw, typ)
        check = _FIELDS[name].metadata["check"]
        problem = check(value) if check else None
        if problem:
            raise ConfigError(f"config key '{key}': {problem}, got {value!r}")
        updates[name] = value
    out = dataclasses.replace(cfg, **updates)
    _cross_check(out)
    return out


def parse_set(items: list[str]) -> dict[str, str]:
    """Parse ``key=value`` strings from ``--set``; a missing '=' is a ConfigError."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Defaults, then the TOML file at ``path`` (if any), then ``overrides``."""
    cfg = RunConfig()
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {p} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
        nested = [k for k, v in data.items() if isinstance(v, dict)]
        if nested:
            raise ConfigError(f"config key '{nested[0]}': tables are not supported, use flat key = value lines")
        cfg = apply_overrides(cfg, data)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    return cfg


def from_run_config(run_config: Mapping[str, Any]) -> RunConfig:
    """Map Flower's run_config (dashed keys, ``num-server-rounds``) onto a RunConfig."""
    return apply_overrides(RunConfig(), dict(run_config))
