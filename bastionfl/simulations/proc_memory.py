"""Memory of a benchmarked federation: this process's peak RSS (Linux ``VmHWM``, reset per run through
``/proc/self/clear_refs``) and the peak of the summed RSS of its descendant processes (sampled).

On the Simulation Engine this process runs the ServerApp and the engine that hands messages to the client actors;
the actors (one per CPU, running every ClientApp in turn) and Ray's own services are descendant processes.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any

__all__ = ["MemoryWatch"]

PROC = Path("/proc")


def _status_kb(path: Path, field: str) -> int | None:
    """A ``kB`` field of a /proc status file, or None where it cannot be read (not Linux, process gone)."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_own_peak() -> bool:
    """Start this process's high-water mark afresh (Linux >= 4.0); False where the kernel refuses."""
    try:
        (PROC / "self" / "clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _descendants_rss_kb(root: int) -> int:
    """Summed RSS of every live descendant of ``root`` (one pass over /proc)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        total += _status_kb(PROC / str(pid) / "status", "VmRSS") or 0
        todo.extend(children.get(pid, []))
    return total


class MemoryWatch:
    """Context manager: this process's peak RSS over the block and the sampled peak of its descendants' RSS."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.reset = False
        self.descendants_peak_kb = 0
        self.load_1m: list[float] = []  # the 1-minute load average at each sample (the machine's share of the run)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="memory-watch", daemon=True)

    def _sample(self) -> None:
        me = os.getpid()
        while not self._stop.wait(self.interval_s):
            self.descendants_peak_kb = max(self.descendants_peak_kb, _descendants_rss_kb(me))
            self._sample_load()

    def _sample_load(self) -> None:
        with contextlib.suppress(OSError):  # no load average on this platform: the run records none
            self.load_1m.append(os.getloadavg()[0])

    def __enter__(self) -> MemoryWatch:
        self.reset = _reset_own_peak()
        self._sample_load()
        if PROC.is_dir():
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def load_range(self) -> list[float] | None:
        """Lowest and highest 1-minute load average seen over the block: what shared the CPUs with the run."""
        return [round(min(self.load_1m), 2), round(max(self.load_1m), 2)] if self.load_1m else None

    def figures(self) -> dict[str, Any]:
        """Peak RSS in MB (None where unreadable), and what the own figure spans."""
        own = _status_kb(PROC / "self" / "status", "VmHWM")
        return {"server_process_peak_rss_mb": None if own is None else own / 1024,
                "server_process_peak_since": "this run" if self.reset else "process start",
                "descendants_peak_rss_mb": self.descendants_peak_kb / 1024 if self._thread.ident else None}
