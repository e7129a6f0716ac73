"""Hand memory the process has freed back to the operating system.

glibc's allocator keeps freed heap memory (below its mmap threshold, which grows with every large free) for reuse,
so a process whose key setup or aggregation allocated gigabytes for a moment stays that large between rounds.
``malloc_trim(0)`` returns the free pages of every arena. Where the C library is not glibc (macOS, musl) there is no
such call and ``trim_freed_memory`` does nothing. No Flower or torch import: usable from any layer.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform
from typing import Any

__all__ = ["trim_freed_memory", "glibc_available"]

log = logging.getLogger("bastionfl.alloc")

_UNSET: Any = object()
_trim: Any = _UNSET


def _load_trim() -> Any:
    """glibc's ``malloc_trim``, or None where the C library is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def glibc_available() -> bool:
    """Whether this process can trim its heap (its C library is glibc)."""
    global _trim
    if _trim is _UNSET:
        _trim = _load_trim()
    return _trim is not None


def trim_freed_memory(where: str = "") -> bool:
    """Return freed heap memory to the OS after a large transient allocation; True when glibc released pages."""
    if not glibc_available():
        log.debug("no glibc malloc_trim here; freed memory stays with the allocator (%s)", where or "unnamed point")
        return False
    released = bool(_trim(0))
    log.debug("malloc_trim(0) after %s: %s", where or "unnamed point",
              "pages released" if released else "nothing to release")
    return released
