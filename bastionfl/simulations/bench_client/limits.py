"""Enforce a device profile's limits on the client process, and say which mechanism enforced each one.

Order of preference per limit: cgroup v2 (when the unified hierarchy offers the controller), else cgroup v1 under
``/sys/fs/cgroup/<controller>`` (needs root), else the per-process fallback — CPU affinity (what ``taskset`` sets)
for cores and ``RLIMIT_AS`` (what ``prlimit --as`` sets) for memory. A limit nothing could enforce is reported with
the reason; it is never silently dropped. Groups are made beside this process's own cgroup and removed afterwards.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .profiles import DeviceProfile

__all__ = ["LimitResult", "Enforcer", "MODES"]

MODES = ("auto", "cgroup", "fallback", "none")
_PERIOD_US = 100_000


@dataclass
class LimitResult:
    """One requested limit: what was asked, whether it holds, and the mechanism (or why nothing could enforce it)."""

    limit: str
    requested: str
    enforced: bool
    mechanism: str
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


def _mounts(proc: Path) -> list[tuple[str, str, list[str]]]:
    out = []
    try:
        for line in (proc / "self" / "mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 4:
                out.append((parts[1], parts[2], parts[3].split(",")))
    except OSError:
        pass
    return out


def _own_paths(proc: Path) -> dict[str, str]:
    """This process's cgroup path per v1 controller, and under key ``""`` its v2 path."""
    paths: dict[str, str] = {}
    try:
        for line in (proc / "self" / "cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                paths[c] = path
    except (OSError, ValueError):
        pass
    return paths


def _write(path: Path, value: str) -> None:
    with open(path, "w") as fh:
        fh.write(value)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _keyed(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in path.read_text().splitlines():
            k, _, v = line.partition(" ")
            if v.strip().isdigit():
                out[k] = int(v)
    except OSError:
        pass
    return out


@dataclass
class _Group:
    """One cgroup directory the client joins (its procs file) and the version it belongs to."""

    path: Path
    version: int

    def join_file(self) -> Path:
        return self.path / "cgroup.procs"


@dataclass
class Enforcer:
    """Limits of ``profile`` for one client process: prepare (parent), join (child, before exec), read, clean up."""

    profile: DeviceProfile
    mode: str = "auto"
    proc: Path = Path("/proc")
    results: list[LimitResult] = field(default_factory=list)
    client_cpus: list[int] = field(default_factory=list)
    other_cpus: list[int] = field(default_factory=list)
    as_cap_mb: int = 0  # RLIMIT_AS fallback: the cap the child applies to itself after its imports
    _groups: list[_Group] = field(default_factory=list)
    _memory: _Group | None = None

    # -- parent side ----------------------------------------------------------------------------------------------
    def prepare(self, tag: str) -> None:
        """Create and configure the groups (or choose the fallbacks) for one client run named ``tag``."""
        p = self.profile
        allowed = sorted(os.sched_getaffinity(0))
        want = p.cores if p.cores > 0 else len(allowed)
        self.client_cpus = allowed[-want:] if want <= len(allowed) else allowed
        self.other_cpus = [c for c in allowed if c not in self.client_cpus] or allowed
        self.results = [self._cores(tag, want, allowed), self._memory_limit(tag),
                        LimitResult("torch_threads", str(p.torch_threads), True,
                                    "torch.set_num_threads + OMP/MKL/OpenBLAS thread variables in the client")]

    def _usable(self) -> bool:
        return self.mode in ("auto", "cgroup")

    def _v2_group(self, tag: str, controller: str) -> tuple[_Group | None, str]:
        mount = next((Path(m) for m, fs, _ in _mounts(self.proc) if fs == "cgroup2"), None)
        if mount is None:
            return None, "no cgroup v2 mount"
        try:
            controllers = (mount / "cgroup.controllers").read_text().split()
        except OSError as exc:
            return None, f"cgroup v2: {exc.strerror}"
        if controller not in controllers:
            return None, f"cgroup v2 at {mount} offers no {controller} controller ({' '.join(controllers) or 'none'})"
        try:
            sub = (mount / "cgroup.subtree_control").read_text().split()
            if controller not in sub:
                _write(mount / "cgroup.subtree_control", f"+{controller}")
            path = mount / f"bastionfl-{tag}"
            path.mkdir(exist_ok=True)
        except OSError as exc:
            return None, f"cgroup v2 {controller}: {exc.strerror or exc}"
        return _Group(path, 2), ""

    def _v1_group(self, tag: str, controller: str) -> tuple[_Group | None, str]:
        mount = next((Path(m) for m, fs, opts in _mounts(self.proc) if fs == "cgroup" and controller in opts), None)
        if mount is None:
            return None, f"no cgroup v1 {controller} hierarchy mounted"
        own = _own_paths(self.proc).get(controller, "/").lstrip("/")
        path = mount / own / f"bastionfl-{tag}"
        try:
            path.mkdir(exist_ok=True)
        except OSError as exc:
            return None, f"cgroup v1 {controller} at {mount}: {exc.strerror or exc}"
        return _Group(path, 1), ""

    def _group(self, tag: str, controller: str) -> tuple[_Group | None, list[str]]:
        why: list[str] = []
        for make in (self._v2_group, self._v1_group):
            group, reason = make(tag, controller)
            if group is not None:
                return group, why
            why.append(reason)
        return None, why

    def _cores(self, tag: str, want: int, allowed: list[int]) -> LimitResult:
        p = self.profile
        if p.cores == 0:
            return LimitResult("cores", "no limit", True, "none needed", f"{len(allowed)} CPUs available")
        cpus = ",".join(str(c) for c in self.client_cpus)
        short = "" if want <= len(allowed) else f"; the profile asks {want} cores, this machine allows {len(allowed)}"
        if self.mode == "none":
            return LimitResult("cores", str(p.cores), False, "not enforced", "--enforce none")
        mechanisms, notes = [], []
        if self._usable():
            group, why = self._group(tag, "cpuset")
            if group is not None:
                try:
                    if group.version == 1:
                        mems = (group.path.parent / "cpuset.mems").read_text().strip() or "0"
                        _write(group.path / "cpuset.mems", mems)
                    _write(group.path / "cpuset.cpus", cpus)
                    self._groups.append(group)
                    mechanisms.append(f"cgroup v{group.version} cpuset (cpus {cpus})")
                except OSError as exc:
                    notes.append(f"cpuset: {exc.strerror or exc}")
            else:
                notes.extend(why)
            group, why = self._group(tag, "cpu")
            if group is not None:
                try:
                    if group.version == 2:
                        _write(group.path / "cpu.max", f"{len(self.client_cpus) * _PERIOD_US} {_PERIOD_US}")
                    else:
                        _write(group.path / "cpu.cfs_period_us", str(_PERIOD_US))
                        _write(group.path / "cpu.cfs_quota_us", str(len(self.client_cpus) * _PERIOD_US))
                    self._groups.append(group)
                    mechanisms.append(f"cgroup v{group.version} cpu quota ({len(self.client_cpus)} x {_PERIOD_US} us "
                                      f"per {_PERIOD_US} us)")
                except OSError as exc:
                    notes.append(f"cpu quota: {exc.strerror or exc}")
            else:
                notes.extend(why)
        if not any("cpuset" in m for m in mechanisms):
            mechanisms.append(f"CPU affinity (sched_setaffinity, as taskset -c {cpus})")
        detail = "; ".join(n for n in notes if n) + short
        return LimitResult("cores", str(p.cores), not short, " + ".join(mechanisms), detail.strip("; "))

    def _memory_limit(self, tag: str) -> LimitResult:
        p = self.profile
        if p.memory_mb == 0:
            return LimitResult("memory", "no limit", True, "none needed")
        if self.mode == "none":
            return LimitResult("memory", f"{p.memory_mb} MiB", False, "not enforced", "--enforce none")
        notes: list[str] = []
        limit = p.memory_mb * 1024 * 1024
        if self._usable():
            group, why = self._group(tag, "memory")
            notes.extend(why)
            if group is not None:
                try:
                    if group.version == 2:
                        _write(group.path / "memory.max", str(limit))
                        if (group.path / "memory.swap.max").exists():
                            _write(group.path / "memory.swap.max", "0")
                    else:
                        _write(group.path / "memory.limit_in_bytes", str(limit))
                        if (group.path / "memory.memsw.limit_in_bytes").exists():
                            _write(group.path / "memory.memsw.limit_in_bytes", str(limit))
                    self._groups.append(group)
                    self._memory = group
                    files = "memory.max" if group.version == 2 else "memory.limit_in_bytes + memsw"
                    return LimitResult("memory", f"{p.memory_mb} MiB", True,
                                       f"cgroup v{group.version} memory ({files}, kernel OOM killer)",
                                       "; ".join(notes))
                except OSError as exc:
                    notes.append(f"memory: {exc.strerror or exc}")
        if self.mode == "cgroup":
            return LimitResult("memory", f"{p.memory_mb} MiB", False, "not enforced",
                               "no usable cgroup memory controller: " + "; ".join(notes))
        self.as_cap_mb = p.memory_mb
        return LimitResult("memory", f"{p.memory_mb} MiB", True,
                           "RLIMIT_AS (as prlimit --as), set in the client after its imports to its non-resident "
                           "mappings + the cap: approximates an RSS cap; an allocation past it fails (MemoryError)",
                           "; ".join(n for n in notes if n))

    def child_env(self) -> dict[str, str]:
        """Thread-count variables for the client's numerical libraries."""
        n = str(self.profile.torch_threads)
        return {k: n for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}

    # -- child side (between fork and exec) -------------------------------------------------------------------------
    def join(self) -> None:
        """Move the calling process into the groups and pin it to the client CPUs (runs in the child)."""
        pid = str(os.getpid())
        for group in self._groups:
            _write(group.join_file(), pid)
        if self.client_cpus:
            os.sched_setaffinity(0, self.client_cpus)

    # -- after the run ------------------------------------------------------------------------------------------------
    def memory_events(self) -> dict[str, Any]:
        """The memory group's peak use (MiB) and how often it hit the limit or OOM-killed (empty without a group)."""
        g = self._memory
        if g is None:
            return {}
        if g.version == 2:
            peak = _read_int(g.path / "memory.peak")
            events = _keyed(g.path / "memory.events")
            return {"peak_mb": None if peak is None else peak / 2**20, "limit_hits": events.get("max", 0),
                    "oom_kills": events.get("oom_kill", 0)}
        peak = _read_int(g.path / "memory.max_usage_in_bytes")
        return {"peak_mb": None if peak is None else peak / 2**20,
                "limit_hits": _read_int(g.path / "memory.failcnt") or 0,
                "oom_kills": _keyed(g.path / "memory.oom_control").get("oom_kill", 0)}

    def charge_shared_pages(self, rss_mb: float) -> None:
        """Make the cgroup cap a cap on RSS: lower it by the client's resident pages charged to other groups.

        A memory cgroup is charged for the pages its processes bring in, not for library pages already in the page
        cache (torch's libraries, cached by another process): they count in RSS but not against the limit. On a
        device every resident page counts, so after the client's imports the limit drops by that difference.
        """
        g = self._memory
        if g is None or self.profile.memory_mb == 0:
            return
        usage = _read_int(g.path / ("memory.current" if g.version == 2 else "memory.usage_in_bytes"))
        if usage is None:
            return
        uncharged = int(rss_mb * 2**20) - usage
        if uncharged <= 0:
            return
        wanted = self.profile.memory_mb * 2**20 - uncharged
        limit = max(wanted, usage + 16 * 2**20)
        if limit > wanted:
            effective = (limit + uncharged) / 2**20
            self._note_memory(f"the client's {rss_mb:.0f} MB of RSS after its imports already exceed the cap: the "
                              f"round runs with 16 MiB of headroom, an effective cap of {effective:.0f} MB of RSS")
        try:
            _write(g.path / ("memory.max" if g.version == 2 else "memory.limit_in_bytes"), str(limit))
        except OSError as exc:
            self._note_memory(f"could not lower the limit for shared pages ({exc.strerror or exc})")
            return
        self._note_memory(f"limit lowered to {limit / 2**20:.0f} MiB after the imports: {uncharged / 2**20:.0f} MiB "
                          "of the client's RSS are library pages charged to other groups; the cap holds for RSS")

    def _note_memory(self, text: str) -> None:
        for r in self.results:
            if r.limit == "memory":
                r.detail = "; ".join(x for x in (r.detail, text) if x)

    def cleanup(self) -> None:
        """Remove the groups this run made (their processes have exited)."""
        for group in reversed(self._groups):
            try:
                group.path.rmdir()
            except OSError:
                pass
        self._groups.clear()
