"""``RunConfig``: the sections of one run, and how settings reach it (defaults, TOML, overrides, Flower, clients).

Sources, later ones win: the defaults, a TOML file (flat ``key = value`` lines or ``[section]`` tables), then
``--set key=value`` overrides. Flower's run config (``[tool.flwr.app.config]``, ``flwr run -c``) uses the same
flat keys with dashes (``num-server-rounds`` is ``rounds``). Settings that follow the task (model, lr, batch size,
rounds, text layers) take the defaults of the dataset's task kind unless they were given. Every bad key or value
raises ``ConfigError`` with one line naming the key; every cross-field check runs when a configuration is built.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, Mapping

from bastionfl.errors import BastionFLError

from .enums import TASK_PROFILES, TaskKind, task_kind
from .sections import (
    SECTIONS,
    AdmissionConfig,
    AttackConfig,
    DefenseConfig,
    FederationConfig,
    RuntimeConfig,
    SecureAggregationConfig,
    TaskConfig,
)

__all__ = [
    "RunConfig",
    "ConfigError",
    "KEYS",
    "FIELD_HELP",
    "apply_overrides",
    "load_config",
    "parse_set",
    "from_run_config",
    "from_saved",
    "client_values",
    "from_client_values",
]


class ConfigError(BastionFLError, ValueError):
    """A configuration key or value is wrong; the message names the key."""


@dataclass(frozen=True)
class _Key:
    section: str
    name: str
    field: dataclasses.Field

    @property
    def type(self) -> type:
        return _TYPES[str(self.field.type)]

    @property
    def clients(self) -> bool:
        return bool(self.field.metadata["clients"])


_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}
for _cls in SECTIONS.values():
    for _f in fields(_cls):
        if str(_f.type) not in _TYPES:
            _TYPES[str(_f.type)] = type(_f.default)  # the StrEnum classes

KEYS: dict[str, _Key] = {}
for _section, _cls in SECTIONS.items():
    for _f in fields(_cls):
        _flat = _f.metadata["key"] or _f.name
        assert _flat not in KEYS, f"config key {_flat} defined twice"
        KEYS[_flat] = _Key(_section, _f.name, _f)
FIELD_HELP: dict[str, str] = {k: v.field.metadata["help"] for k, v in KEYS.items()}
_ALIASES = {"num_server_rounds": "rounds"}
_TASK_FOLLOWING = sorted({k for p in TASK_PROFILES.values() for k in p.defaults})


@dataclass(frozen=True)
class RunConfig:
    """Every knob of a BastionFL run, in sections (a small, fast federation on embedded data by default)."""

    task: TaskConfig = field(default_factory=TaskConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    secure: SecureAggregationConfig = field(default_factory=SecureAggregationConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    defense: DefenseConfig = field(default_factory=DefenseConfig)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    @classmethod
    def build(cls, **settings: Any) -> "RunConfig":
        """The defaults with flat settings applied: ``RunConfig.build(dataset="sst2", rounds=3)``."""
        return apply_overrides(cls(), settings)

    @property
    def kind(self) -> TaskKind:
        """Image or text: decided once, by the dataset."""
        return task_kind(self.task.dataset)

    def value(self, key: str) -> Any:
        """The value of one flat key (``"rounds"``, ``"secure_aggregation"``)."""
        k = KEYS[_canonical(key)]
        return getattr(getattr(self, k.section), k.name)

    def flat(self) -> dict[str, Any]:
        """Flat ``{key: value}`` of every setting, enums as plain strings (TOML-, JSON- and Flower-ready)."""
        return {key: _plain(self.value(key)) for key in KEYS}

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """``{section: {key: value}}``, as written to metrics.json and checkpoints (``from_saved`` reads it back)."""
        out: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
        for key, k in KEYS.items():
            out[k.section][key] = _plain(getattr(getattr(self, k.section), k.name))
        return out


def _plain(v: Any) -> Any:
    return str(v) if isinstance(v, StrEnum) else v


def _coerce(key: str, raw: Any, typ: type) -> Any:
    """Convert ``raw`` (a TOML value or an override string) to the field's type, or raise ConfigError."""
    if issubclass(typ, StrEnum):
        if not isinstance(raw, str):
            raise ConfigError(f"config key '{key}': expected one of {', '.join(m.value for m in typ)}, got {raw!r}")
        try:
            return typ(raw.strip())
        except ValueError:
            raise ConfigError(f"config key '{key}': must be one of {', '.join(m.value for m in typ)}, "
                              f"got {raw!r}") from None
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
    if "." in name:  # section.key
        section, _, rest = name.partition(".")
        if section in SECTIONS and rest in KEYS and KEYS[rest].section == section:
            return rest
        raise ConfigError(f"unknown config key '{key}'")
    return _ALIASES.get(name, name)


def _flatten(values: Mapping[str, Any]) -> dict[str, Any]:
    """Section tables (``{"federation": {"rounds": 3}}``) and dotted keys become flat keys."""
    out: dict[str, Any] = {}
    for key, raw in values.items():
        if isinstance(raw, Mapping):
            if key not in SECTIONS:
                raise ConfigError(f"config key '{key}': not a section (sections: {', '.join(SECTIONS)})")
            for sub, v in raw.items():
                name = _canonical(sub)
                if name not in KEYS or KEYS[name].section != key:
                    raise ConfigError(f"unknown config key '{sub}' in section [{key}]")
                out[name] = v
        else:
            out[key] = raw
    return out


def _validated(values: Mapping[str, Any]) -> dict[str, Any]:
    """``{canonical key: typed, checked value}``; an unknown key, wrong type or range is a ConfigError."""
    updates: dict[str, Any] = {}
    for key, raw in _flatten(values).items():
        name = _canonical(key)
        if name not in KEYS:
            raise ConfigError(f"unknown config key '{key}' (bastionfl simulate --list-keys prints them all)")
        value = _coerce(key, raw, KEYS[name].type)
        check = KEYS[name].field.metadata["check"]
        problem = check(value) if check else None
        if problem:
            raise ConfigError(f"config key '{key}': {problem}, got {_plain(value)!r}")
        updates[name] = value
    return updates


def _follow_task(cfg: RunConfig, updates: dict[str, Any]) -> None:
    """Settings left at the previous task kind's default take the new kind's default when the dataset changes."""
    if "dataset" not in updates:
        return
    old, new = cfg.kind, task_kind(updates["dataset"])
    if old == new:
        return
    for key in _TASK_FOLLOWING:
        if key in updates:
            continue
        old_default = TASK_PROFILES[old].defaults.get(key, KEYS[key].field.default)
        if cfg.value(key) == old_default and key in TASK_PROFILES[new].defaults:
            updates[key] = TASK_PROFILES[new].defaults[key]


def _build(cfg: RunConfig, updates: Mapping[str, Any]) -> RunConfig:
    by_section: dict[str, dict[str, Any]] = {}
    for key, value in updates.items():
        k = KEYS[key]
        by_section.setdefault(k.section, {})[k.name] = value
    changes = {s: dataclasses.replace(getattr(cfg, s), **v) for s, v in by_section.items()}
    return dataclasses.replace(cfg, **changes)


def apply_overrides(cfg: RunConfig, values: Mapping[str, Any]) -> RunConfig:
    """A copy of ``cfg`` with ``values`` applied, task defaults followed and every cross-field check passed."""
    from .checks import cross_check

    updates = _validated(values)
    _follow_task(cfg, updates)
    out = _build(cfg, updates)
    cross_check(out)
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
    """Defaults, then the TOML file at ``path`` (flat lines or ``[section]`` tables), then ``overrides``."""
    cfg = RunConfig()
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {p} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {p} cannot be read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
        cfg = apply_overrides(cfg, data)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    return cfg


def from_run_config(run_config: Mapping[str, Any]) -> RunConfig:
    """Flower's run config (dashed flat keys, ``num-server-rounds``) as a RunConfig.

    pyproject.toml lists every key at its default; a key still at its default is not an override, so that a run
    config naming only ``dataset = "sst2"`` takes the text task's defaults like ``--set dataset=sst2`` does.
    """
    defaults = RunConfig()
    given = {k: v for k, v in _validated(run_config).items() if v != defaults.value(k)}
    return apply_overrides(defaults, given)


def from_saved(saved: Mapping[str, Any]) -> RunConfig:
    """A configuration written by ``to_dict`` (or the flat form of earlier versions) read back.

    Earlier flat configs spelled ``poisoned_clients_defend`` as ``threat = honest | malicious``; keys a saved
    configuration lacks take their defaults.
    """
    values = dict(saved)
    if "threat" in values:  # written before the rename
        values["poisoned_clients_defend"] = values.pop("threat") != "malicious"
    return apply_overrides(RunConfig(), values)


def client_values(cfg: RunConfig) -> dict[str, Any]:
    """The flat settings a client needs (never a server-side path, the HA's URL or token): what clients are sent."""
    return {key: _plain(cfg.value(key)) for key, k in KEYS.items() if k.clients}


def from_client_values(values: Mapping[str, Any]) -> RunConfig:
    """A client's view of the run configuration from what the server sent (unknown keys refused)."""
    unknown = [k for k in values if _canonical(k) in KEYS and not KEYS[_canonical(k)].clients]
    if unknown:
        raise ConfigError(f"config key '{unknown[0]}' is server-side and is never sent to clients")
    return apply_overrides(RunConfig(), values)
