"""trim_freed_memory: runs everywhere; on glibc it gives freed heap pages back."""

from __future__ import annotations

import logging

import pytest

from bastionfl import alloc


def _free_fragmented_heap() -> list[bytearray]:
    """Free chunks between live ones (below the mmap threshold), so the heap has pages only a trim gives back."""
    blocks = [bytearray(64 * 1024) for _ in range(400)]
    kept = blocks[::10]
    del blocks
    return kept


def test_trim_runs_and_reports() -> None:
    kept = _free_fragmented_heap()
    released = alloc.trim_freed_memory("test")
    assert len(kept) == 40
    assert isinstance(released, bool)
    if alloc.glibc_available():
        assert released, "glibc's malloc_trim(0) released nothing after 23 MB of freed 64 KB blocks"
    else:
        assert released is False


def test_no_glibc_is_a_logged_no_op(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(alloc, "_trim", None)
    with caplog.at_level(logging.DEBUG, logger="bastionfl.alloc"):
        assert alloc.trim_freed_memory("key setup") is False
    assert "no glibc malloc_trim" in caplog.text and "key setup" in caplog.text
