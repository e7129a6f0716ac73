"""Turn an allocation failure during a client stage into a reported out-of-memory exit within milliseconds.

Why exit rather than raise: SEAL's memory pool (inside TenSEAL's bindings) stays locked after a failed allocation;
the next SEAL allocation or free — for instance Python dropping the ciphertexts the failed stage built — spins at
100 % CPU forever (observed under ``prlimit --as``: more than ten minutes, until killed). Unwinding the stage would
free those objects, so the guard reports while the traceback still holds them and ends the process with
``os._exit`` (no destructors run). To Flower this is a node whose ClientApp process died: it drops out of the round.
A deadline (faulthandler's C-level watchdog, which works while the bindings hold the GIL) is the backstop for a hang
that starts before Python sees the error.

The client path (``client/secure.py``) wraps each crypto step in ``guarded(stage)``, which uses this guard where
the ClientApp owns its process (``flwr-clientapp``, one message per process), parsing of the message inside::

    with memory_guard("encrypt"):
        blob = epoch.upload(round_number, update, weight, keep_own_c1=False)
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import re
import resource
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

from bastionfl.errors import BastionFLError

__all__ = ["EXIT_OUT_OF_MEMORY", "EXIT_DEADLINE", "OutOfMemoryReport", "StageOutOfMemory", "memory_guard",
           "memory_available_mb", "check_memory_budget", "process_memory_mb", "report_json"]

EXIT_OUT_OF_MEMORY = 75  # exit status of a client process that ran out of memory in a guarded stage
EXIT_DEADLINE = 1  # faulthandler's exit status when a guarded stage passed its deadline
_RESERVE_BYTES = 4 * 1024 * 1024  # freed on failure so that reporting itself can allocate


# how libraries report a failed allocation other than MemoryError: torch's CPU allocator, C++ std::bad_alloc through
# pybind11, and zstd inside SEAL's serialisation (ZSTD_error_memory_allocation = -64, printed as an unsigned code)
_ALLOCATION_FAILURE_TEXTS = ("can't allocate memory", "bad_alloc", "error code 4294967232",
                             "error code 18446744073709551552")


def is_allocation_failure(exc: BaseException) -> bool:
    """A MemoryError, or an allocation failure a library reports as a RuntimeError."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(s in text for s in _ALLOCATION_FAILURE_TEXTS)


class StageOutOfMemory(BastionFLError, MemoryError):
    """A stage would not fit in the memory this process may still use (raised before any allocation happens)."""


@dataclass(frozen=True)
class OutOfMemoryReport:
    """What the guard reports on failure: the stage, the process's memory then, and the exception's text."""

    stage: str
    rss_mb: float
    peak_rss_mb: float
    vm_mb: float
    limit_mb: float | None
    error: str

    def line(self) -> str:
        """One line for a log: ``out of memory in stage X at RSS Y MB ...``."""
        limit = f", limit {self.limit_mb:.0f} MB" if self.limit_mb else ""
        return (f"bastionfl: out of memory in stage {self.stage} at RSS {self.rss_mb:.0f} MB "
                f"(peak {self.peak_rss_mb:.0f} MB, virtual {self.vm_mb:.0f} MB{limit}): {self.error}")


def process_memory_mb(pid: int | str = "self") -> dict[str, float]:
    """VmRSS, VmHWM (peak RSS) and VmSize of a process in MiB (zeros where /proc is unavailable)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {"rss": 0.0, "peak": 0.0, "vm": 0.0}
    out = {}
    for key, name in (("VmRSS", "rss"), ("VmHWM", "peak"), ("VmSize", "vm")):
        m = re.search(rf"^{key}:\s+(\d+)", text, re.M)
        out[name] = int(m.group(1)) / 1024 if m else 0.0
    return out


def _cgroup_headroom_mb() -> float | None:
    """Limit minus usage of this process's memory cgroup (v2 or v1), or None without a limit."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        candidates = []
        if controllers == "":
            candidates.append((Path("/sys/fs/cgroup") / path.lstrip("/"), "memory.max", "memory.current"))
            candidates.append((Path("/sys/fs/cgroup/unified") / path.lstrip("/"), "memory.max", "memory.current"))
        elif "memory" in controllers.split(","):
            candidates.append((Path("/sys/fs/cgroup/memory") / path.lstrip("/"), "memory.limit_in_bytes",
                               "memory.usage_in_bytes"))
        for base, limit_file, usage_file in candidates:
            try:
                limit_text = (base / limit_file).read_text().strip()
                usage = int((base / usage_file).read_text().strip())
            except (OSError, ValueError):
                continue
            if limit_text == "max" or int(limit_text) >= 2**60:
                continue
            return (int(limit_text) - usage) / 2**20
    return None


def memory_available_mb() -> float:
    """What this process may still allocate: the least of its cgroup headroom, its RLIMIT_AS headroom and
    the system's MemAvailable."""
    options: list[float] = []
    headroom = _cgroup_headroom_mb()
    if headroom is not None:
        options.append(headroom)
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        options.append(soft / 2**20 - process_memory_mb()["vm"])
    try:
        m = re.search(r"^MemAvailable:\s+(\d+)", Path("/proc/meminfo").read_text(), re.M)
        if m:
            options.append(int(m.group(1)) / 1024)
    except OSError:
        pass
    return max(0.0, min(options)) if options else float("inf")


def check_memory_budget(stage: str, need_mb: float) -> None:
    """Refuse a stage that needs more memory than remains, before it allocates (``StageOutOfMemory``): unlike a
    failure inside SEAL, this one can be answered with an ordinary error reply."""
    free = memory_available_mb()
    if need_mb > free:
        raise StageOutOfMemory(f"stage {stage} needs about {need_mb:.0f} MB, only {free:.0f} MB remain")


def _limit_mb() -> float | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY else soft / 2**20


@contextlib.contextmanager
def memory_guard(
    stage: str,
    on_oom: Callable[[OutOfMemoryReport], None] | None = None,
    deadline_s: float | None = None,
    exit_code: int = EXIT_OUT_OF_MEMORY,
) -> Iterator[None]:
    """Run a stage; on ``MemoryError`` report (stderr line, then ``on_oom``) and ``os._exit(exit_code)`` at once.

    ``deadline_s``: end the process (status 1, tracebacks on stderr) if the stage is still running then.
    A ``StageOutOfMemory`` from :func:`check_memory_budget` is a refusal, not a failure: it propagates.
    """
    reserve = bytearray(_RESERVE_BYTES)
    if deadline_s is not None:
        faulthandler.dump_traceback_later(deadline_s, exit=True)
    try:
        yield
    except StageOutOfMemory:
        raise
    except (MemoryError, RuntimeError) as exc:
        if not is_allocation_failure(exc):
            raise
        del reserve  # room for the report; nothing SEAL holds is freed (the traceback keeps it alive)
        mem = process_memory_mb()
        report = OutOfMemoryReport(stage, mem["rss"], mem["peak"], mem["vm"], _limit_mb(),
                                   f"{type(exc).__name__}: {exc}"[:300])
        try:
            os.write(2, (report.line() + "\n").encode())
            if on_oom is not None:
                on_oom(report)
        finally:
            os._exit(exit_code)
    finally:
        if deadline_s is not None:
            faulthandler.cancel_dump_traceback_later()


def report_json(report: OutOfMemoryReport) -> str:
    """The report as one JSON line (for a parent process that collects stage results)."""
    return json.dumps({"event": "oom", **asdict(report)})
