"""Device profiles of the client benchmark: limits to enforce and the public figures of the energy/speed model.

The profiles live in ``devices.toml`` beside this module (shipped with the package); a user may point
``--profiles-file`` at an edited copy. Every figure that is not enforced is a model input with its source.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from bastionfl.errors import BastionFLError

__all__ = ["BenchClientError", "DeviceProfile", "Reference", "load_profiles", "get_device_profile"]

_FILE = "devices.toml"


class BenchClientError(BastionFLError, ValueError):
    """A user mistake in the client benchmark's options or profile file (one-line message)."""


@dataclass(frozen=True)
class DeviceProfile:
    """One device class: the limits (cores, torch threads, memory) and its power and single-core speed figures."""

    name: str
    description: str
    cores: int
    torch_threads: int
    memory_mb: int
    idle_w: float
    load_w: float
    soc_cores: int
    power_source: str
    cpu_score: float
    score_source: str

    @property
    def dyn_w_per_core(self) -> float:
        """Power one busy core adds above idle: the model's charge per CPU second."""
        return (self.load_w - self.idle_w) / self.soc_cores


@dataclass(frozen=True)
class Reference:
    """The reference core (this machine's class) that cost factors and host energy refer to, and the paper's figure."""

    name: str
    cpu_score: float
    score_source: str
    dyn_w_per_core: float
    power_source: str
    paper_avg_power_w: float
    paper: str


def _require(table: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in table:
        raise BenchClientError(f"{where}: missing {key!r}")
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BenchClientError(f"{where}: {key!r} must be a {kind.__name__}, got {value!r}")
    return value


def _profile(name: str, t: dict[str, Any]) -> DeviceProfile:
    where = f"device profile {name!r}"
    p = DeviceProfile(
        name=name,
        description=_require(t, "description", str, where),
        cores=_require(t, "cores", int, where),
        torch_threads=_require(t, "torch_threads", int, where),
        memory_mb=_require(t, "memory_mb", int, where),
        idle_w=_require(t, "idle_w", float, where),
        load_w=_require(t, "load_w", float, where),
        soc_cores=_require(t, "soc_cores", int, where),
        power_source=_require(t, "power_source", str, where),
        cpu_score=_require(t, "cpu_score", float, where),
        score_source=_require(t, "score_source", str, where),
    )
    if p.cores < 0 or p.torch_threads < 1 or p.memory_mb < 0 or p.soc_cores < 1:
        raise BenchClientError(f"{where}: need cores >= 0, torch_threads >= 1, memory_mb >= 0, soc_cores >= 1")
    if not (0 <= p.idle_w <= p.load_w) or p.cpu_score <= 0:
        raise BenchClientError(f"{where}: need 0 <= idle_w <= load_w and cpu_score > 0")
    return p


def _read(path: Path | None) -> dict[str, Any]:
    try:
        if path is None:
            text = resources.files(__package__).joinpath(_FILE).read_text(encoding="utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
        return tomllib.loads(text)
    except OSError as exc:
        raise BenchClientError(f"cannot read the profile file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BenchClientError(f"profile file {path or _FILE}: {exc}") from None


def load_profiles(path: Path | None = None) -> tuple[dict[str, DeviceProfile], Reference]:
    """All profiles and the reference of a profile file (the shipped ``devices.toml`` by default)."""
    data = _read(path)
    ref_t = data.get("reference")
    if not isinstance(ref_t, dict):
        raise BenchClientError("profile file: missing [reference] table")
    ref = Reference(
        name=_require(ref_t, "name", str, "[reference]"),
        cpu_score=_require(ref_t, "cpu_score", float, "[reference]"),
        score_source=_require(ref_t, "score_source", str, "[reference]"),
        dyn_w_per_core=_require(ref_t, "dyn_w_per_core", float, "[reference]"),
        power_source=_require(ref_t, "power_source", str, "[reference]"),
        paper_avg_power_w=_require(ref_t, "paper_avg_power_w", float, "[reference]"),
        paper=_require(ref_t, "paper", str, "[reference]"),
    )
    tables = data.get("profiles")
    if not isinstance(tables, dict) or not tables:
        raise BenchClientError("profile file: no [profiles.<name>] tables")
    return {name: _profile(name, t) for name, t in tables.items()}, ref


def get_device_profile(name: str, path: Path | None = None) -> tuple[DeviceProfile, Reference]:
    """One profile by name, with the file's reference; ``BenchClientError`` naming the choices otherwise."""
    profiles, ref = load_profiles(path)
    if name not in profiles:
        raise BenchClientError(f"unknown device profile {name!r}; choose one of {', '.join(sorted(profiles))}")
    return profiles[name], ref
