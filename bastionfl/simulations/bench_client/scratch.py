"""Removing the SEAL scratch folder a benchmark process leaves behind.

``crypto`` serialises SEAL objects through files in a private ``bastionfl-seal-*`` folder (on ``/dev/shm`` where it
exists), made at the first use in a process and never removed; the benchmark's processes end with ``os._exit``
(or are killed under a memory cap), so each run would leave folders behind. Each process reports its folder, removes
it before it exits, and the harness removes what a killed client reported.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["seal_scratch_dir", "remove_scratch"]

_PREFIX = "bastionfl-seal-"


def seal_scratch_dir() -> str | None:
    """This process's SEAL scratch folder, or None if it has made none."""
    from bastionfl.crypto import backend

    scratch = getattr(backend, "_scratch", None)
    path = getattr(scratch, "_dir", None)
    return str(path) if path and os.path.isdir(path) else None


def remove_scratch(path: str | None) -> bool:
    """Remove one scratch folder (only a ``bastionfl-seal-*`` folder, with its leftover files); True if gone."""
    if not path or not Path(path).name.startswith(_PREFIX):
        return False
    folder = Path(path)
    try:
        for entry in folder.iterdir():
            entry.unlink(missing_ok=True)
        folder.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True
